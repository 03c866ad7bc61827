"""Folds trained together: one jitted program steps every fold of a protocol at once.

A leave-one-subject-out protocol of a small model is many short, equal runs;
run one after another, each step keeps the accelerator mostly idle. Here the
folds' train states are stacked on a leading fold axis and the pure train step
is vmapped over it, so each step trains every fold on its own batch (drawn from
its own training subjects). The batch axis is split over the data mesh as for
one fold (``merjax.train.sharding``).

Folds differ in their number of steps per epoch. An epoch runs the longest
fold's number of steps; a fold whose epoch is over gets a batch of zeros and
keeps its state unchanged (``jnp.where`` on an active flag: its step counter,
optimiser state, parameters and BatchNorm statistics do not move). Each fold
therefore ends exactly where ``loop.fit`` would take it alone, up to float
rounding of the batched computation; the learning rate follows each fold's own
``step / steps_per_epoch`` (``merjax.train.state.TrainState``).

Per epoch: train metrics per fold (over its own steps), validation per fold on
its unstacked state, selection per fold as in ``loop.fit`` (last epoch or best
validation metric), and one checkpoint of the stacked state to resume from.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from merjax.train import loop
from merjax.train.sharding import DATA_AXIS, replicate, replicated

# Fields of a train state that are static (part of its tree structure) and must be one object for all folds.
SHARED_FIELDS = {
    "apply_fn": "one model object",
    "tx": "one optimiser object (optim.make_optimizer once per run)",
    "learning_rate_fn": "equal learning-rate schedules (optim.learning_rate_schedule of one config)",
}


def fold_batch_sharded(mesh: Mesh) -> NamedSharding:
    """Stacked batches [folds, batch, ...]: every fold's batch split over the mesh along its batch axis."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def shard_fold_batch(batch: Any, mesh: Mesh) -> Any:
    """Places this process's part of a stacked batch (any pytree of [folds, batch, ...] arrays) on the mesh."""
    sharding = fold_batch_sharded(mesh)
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), batch)


@functools.lru_cache(maxsize=8)
def jit_fold_step(train_step: Callable, mesh: Mesh) -> Callable:
    """``(stacked_state, stacked_batch, active [folds]) -> (stacked_state, metrics [folds])``, jitted once.

    ``train_step`` is the pure, unjitted ``(state, batch) -> (state, metrics)``.
    An inactive fold's new state is discarded leaf by leaf, so nothing of it moves.
    One jitted program per (step, mesh): later stages and runs with the same
    bound step reuse its compilations.
    """

    def masked_step(state: Any, batch: Any, active: jax.Array) -> tuple[Any, Any]:
        new_state, metrics = train_step(state, batch)
        return jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state), metrics

    return jax.jit(
        jax.vmap(masked_step),
        in_shardings=(replicated(mesh), fold_batch_sharded(mesh), replicated(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=(0,),
    )


def check_same_structure(states: Sequence[Any]) -> None:
    """Folds stack only with one tree structure, equal leaf shapes and the same static fields; else one line why."""
    reference = states[0]
    reference_leaves = jax.tree_util.tree_flatten_with_path(reference)[0]
    for index, state in enumerate(states[1:], start=1):
        for field, needed in SHARED_FIELDS.items():
            if getattr(state, field, None) != getattr(reference, field, None):
                raise ValueError(f"fold {index}'s train state has another {field} than fold 0's: folds trained "
                                 f"together need {needed}")
        if jax.tree.structure(state) != jax.tree.structure(reference):
            raise ValueError(f"fold {index}'s train state has another tree structure than fold 0's: folds "
                             f"trained together need one model and one optimiser")
        for (path, want), got in zip(reference_leaves, jax.tree.leaves(state)):
            if jnp.shape(want) != jnp.shape(got) or jnp.result_type(want) != jnp.result_type(got):
                raise ValueError(f"fold {index}'s train state has {jax.tree_util.keystr(path)} of shape "
                                 f"{jnp.shape(got)} {jnp.result_type(got)}, fold 0's {jnp.shape(want)} "
                                 f"{jnp.result_type(want)}: folds trained together need equal shapes")


def stack(states: Sequence[Any], mesh: Mesh) -> Any:
    """The fold states stacked along a new leading axis, replicated on ``mesh``."""
    return jax.jit(lambda *trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees),
                   out_shardings=replicated(mesh))(*states)


@functools.lru_cache(maxsize=8)
def _unstacker(mesh: Mesh) -> Callable[[Any, int], Any]:
    """``(stacked, fold) -> that fold's state``, replicated on ``mesh`` like a state of ``loop.fit``."""
    take = jax.jit(lambda tree, fold: jax.tree.map(lambda leaf: leaf[fold], tree), out_shardings=replicated(mesh))
    return lambda tree, fold: take(tree, jnp.int32(fold))


@functools.lru_cache(maxsize=8)
def _merge_folds(mesh: Mesh) -> Callable[[np.ndarray, Any, Any], Any]:
    """``(take [folds] bool, new, old) -> stacked``: fold f from ``new`` where ``take[f]``, else from ``old``."""

    def merge(take: jax.Array, new: Any, old: Any) -> Any:
        return jax.tree.map(lambda n, o: jnp.where(take.reshape(take.shape + (1,) * (n.ndim - 1)), n, o), new, old)

    merge = jax.jit(merge, out_shardings=replicated(mesh))
    return lambda take, new, old: merge(replicate(np.asarray(take), mesh), new, old)


def _check_batch_like(batch: Any, template: Any, fold: int, template_fold: int, where: str) -> None:
    if jax.tree.structure(batch) != jax.tree.structure(template):
        raise ValueError(f"fold {fold}'s batch {where} has keys {jax.tree.structure(batch)}, fold "
                         f"{template_fold}'s {jax.tree.structure(template)}: folds trained together need "
                         f"batches of one structure")
    for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(template)[0], jax.tree.leaves(batch)):
        if np.shape(got) != np.shape(want) or np.asarray(got).dtype != np.asarray(want).dtype:
            raise ValueError(f"fold {fold}'s batch {where} has {jax.tree_util.keystr(path)} of shape "
                             f"{np.shape(got)} {np.asarray(got).dtype}, fold {template_fold}'s {np.shape(want)} "
                             f"{np.asarray(want).dtype}: folds trained together need batches of one shape "
                             f"(one batch size)")


def _train_epoch(stacked: Any, step: Callable, batches: Sequence[Iterable[Any]], steps_per_epoch: Sequence[int],
                 epoch: int, mesh: Mesh, progress: loop.Progress, desc: str) -> tuple[Any, list[list[Any]]]:
    """One epoch of every fold; returns the stacked state and each fold's per-step metrics (its own steps)."""
    iterators = [iter(fold_batches) for fold_batches in batches]
    step_metrics = []
    for index in progress(range(max(steps_per_epoch)), desc=desc, leave=False):
        active = np.asarray([index < n for n in steps_per_epoch])
        fold_batches = {}
        for fold in range(len(batches)):
            if not active[fold]:
                continue
            fold_batches[fold] = next(iterators[fold], None)
            if fold_batches[fold] is None:
                raise ValueError(f"fold {fold}'s train_batches({epoch}) gave {index} batches, but its "
                                 f"steps_per_epoch is {steps_per_epoch[fold]}")
        template_fold = next(iter(fold_batches))
        template = fold_batches[template_fold]
        for fold, batch in fold_batches.items():
            _check_batch_like(batch, template, fold, template_fold, f"{index} of epoch {epoch}")
        padding = jax.tree.map(np.zeros_like, template)
        stacked_batch = jax.tree.map(lambda *leaves: np.stack(leaves),
                                     *[fold_batches.get(fold, padding) for fold in range(len(batches))])
        stacked, metrics = step(stacked, shard_fold_batch(stacked_batch, mesh), replicate(active, mesh))
        step_metrics.append(metrics)
    for fold, iterator in enumerate(iterators):
        if next(iterator, None) is not None:
            raise ValueError(f"fold {fold}'s train_batches({epoch}) gave more batches than its steps_per_epoch "
                             f"{steps_per_epoch[fold]}")
    host = jax.device_get(step_metrics)
    return stacked, [[{k: v[fold] for k, v in metrics.items()} for metrics in host[:n]]
                     for fold, n in enumerate(steps_per_epoch)]


def fit_folds(
    states: Sequence[Any],
    *,
    train_step: Callable,
    train_batches: Sequence[Callable[[int], Iterable[Any]]],
    steps_per_epoch: Sequence[int],
    epochs: int,
    mesh: Mesh,
    evaluate: Sequence[Callable[[Any], Mapping[str, float]] | None] | None = None,
    select: str | None = None,
    checkpoint_dir: str | None = None,
    progress: loop.Progress = loop.no_progress,
    description: str = "folds",
) -> list[loop.FitResult]:
    """Trains the folds' ``states`` together for ``epochs`` epochs; one ``loop.FitResult`` per fold.

    Args:
      states: the folds' initial train states: one tree structure and leaf
        shapes, one model and optimiser object, equal schedules (a clear error
        names the first difference).
      train_step: the pure, unjitted ``(state, batch) -> (state, metrics)`` (for
        example ``functools.partial(steps.train_step, objective=...)``); it is
        vmapped over the folds and jitted once here.
      train_batches: per fold, ``epoch -> iterable of host batches`` (pytrees of
        numpy arrays, the same structure and shapes for every fold).
      steps_per_epoch: per fold, the number of batches its ``train_batches`` yields
        per epoch (checked), equal to its state's ``steps_per_epoch``.
      epochs: total number of epochs (including any already checkpointed).
      mesh: the device mesh each fold's batch is split over.
      evaluate: optional, per fold, ``state -> {metric: value}`` on that fold's
        validation split (None for a fold without one), called on the fold's
        unstacked state after every epoch; recorded with a ``val_`` prefix.
      select: a validation metric to select each fold's epoch on (higher is
        better), or None to keep the last epoch.
      checkpoint_dir: where to save the stacked state after every epoch and
        resume from; it belongs to this list of folds (a checkpoint of other
        folds does not restore and is treated as damaged).
      progress: a tqdm-like wrapper for the step iterator.
      description: the progress bar's label.

    Each fold's history has the records ``loop.fit`` would write; ``seconds`` is
    the time of the whole epoch of all folds, training and validation.
    """
    num_folds = len(states)
    if not num_folds:
        raise ValueError("fit_folds needs at least one fold")
    evaluate = [None] * num_folds if evaluate is None else list(evaluate)
    for name, values in (("train_batches", train_batches), ("steps_per_epoch", steps_per_epoch),
                         ("evaluate", evaluate)):
        if len(values) != num_folds:
            raise ValueError(f"{len(values)} {name} for {num_folds} fold states: give one per fold")
    for fold, (state, count) in enumerate(zip(states, steps_per_epoch)):
        loop.check_selection(select, evaluate[fold], where=f" (fold {fold} has none)")
        if int(jax.device_get(state.steps_per_epoch)) != count:
            raise ValueError(f"fold {fold}'s state has steps_per_epoch {int(state.steps_per_epoch)} but "
                             f"steps_per_epoch[{fold}] is {count}: give the state the epoch length it trains with")
    check_same_structure(states)

    step = jit_fold_step(train_step, mesh)
    unstack, merge = _unstacker(mesh), _merge_folds(mesh)
    checkpointer, best = loop.open_checkpoints(checkpoint_dir, select)
    resumed = loop.resume(stack(states, mesh), checkpointer, best, select)
    stacked, history = resumed.state, resumed.history
    fold_histories = [[record["folds"][fold] for record in history] for fold in range(num_folds)]
    best_stacked, best_epochs, best_values = None, [-1] * num_folds, [-np.inf] * num_folds
    if resumed.best is not None:
        best_stacked, best_epochs = resumed.best.state, list(resumed.best.history[0]["selected_epochs"])
        best_values = [loop.recorded_value(fold_histories[fold], best_epoch, select) if best_epoch >= 0
                       else -np.inf for fold, best_epoch in enumerate(best_epochs)]

    for epoch in range(resumed.start_epoch, epochs):
        started = time.perf_counter()
        stacked, step_metrics = _train_epoch(
            stacked, step, [fold_batches(epoch) for fold_batches in train_batches], steps_per_epoch, epoch, mesh,
            progress, f"{description} epoch {epoch + 1}/{epochs}")
        records = [{"epoch": epoch, **loop.mean_metrics(step_metrics[fold], "train_"),
                    **(loop.validation_record(evaluate[fold], unstack(stacked, fold)) if evaluate[fold] else {})}
                   for fold in range(num_folds)]
        seconds = time.perf_counter() - started
        for fold, record in enumerate(records):
            record["seconds"] = seconds
            fold_histories[fold].append(record)
        history.append({"epoch": epoch, "folds": records})
        if select is not None:
            improved = [record[f"val_{select}"] > best_values[fold] for fold, record in enumerate(records)]
            if any(improved):
                best_stacked = merge(improved, stacked, stacked if best_stacked is None else best_stacked)
                for fold in range(num_folds):
                    if improved[fold]:
                        best_epochs[fold], best_values[fold] = epoch, records[fold][f"val_{select}"]
                if best is not None:
                    best.save(epoch, best_stacked, [{"epoch": epoch, "selected_epochs": best_epochs}])
        if checkpointer is not None:
            checkpointer.save(epoch, stacked, history)

    results = []
    for fold in range(num_folds):
        if select is None or best_epochs[fold] < 0:
            state, selected_epoch = unstack(stacked, fold), len(fold_histories[fold]) - 1
        else:
            state, selected_epoch = unstack(best_stacked, fold), best_epochs[fold]
        results.append(loop.FitResult(state, fold_histories[fold], selected_epoch=selected_epoch,
                                      resumed_from=resumed.resumed_from, notes=list(resumed.notes)))
    return results
