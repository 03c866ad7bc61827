"""The fit loop: epochs of jitted train steps, evaluation, checkpoints and resume.

The loop is deterministic given its inputs: batches come from
``train_batches(epoch)`` (the caller derives their order and augmentation from
the seed and the epoch), and dropout keys from the step number. A run that is
interrupted and resumed from its last checkpoint therefore ends with the same
parameters as an uninterrupted run.

Model selection never looks at the test fold: either the last epoch is kept
(``select=None``) or the epoch with the best *validation* metric
(``select='uf1'`` etc., validation subjects drawn from the training side).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from merjax.train.checkpoint import Checkpointer, Restored
from merjax.train.sharding import shard_batch

Progress = Callable[..., Iterable]
logger = logging.getLogger(__name__)


def no_progress(iterable: Iterable, **_: Any) -> Iterable:
    """The default progress wrapper: none (library code stays quiet)."""
    return iterable


@dataclasses.dataclass
class FitResult:
    state: Any                       # the selected state (last epoch, or best validation epoch)
    history: list[dict[str, Any]]    # one record per epoch: train_* and val_* metrics, seconds
    selected_epoch: int
    resumed_from: int | None         # the epoch restored from a checkpoint, if any
    notes: list[str] = dataclasses.field(default_factory=list)   # damaged checkpoints skipped on resume


def mean_metrics(step_metrics: list[Mapping[str, Any]], prefix: str) -> dict[str, float]:
    """Averages a list of per-step metric dicts (device arrays) on the host."""
    if not step_metrics:
        return {}
    host = jax.device_get(step_metrics)
    return {f"{prefix}{k}": float(np.mean([m[k] for m in host])) for k in host[0]}


def check_selection(select: str | None, evaluate: Callable | None, where: str = "") -> None:
    """Selecting on a validation metric needs a validation split to compute it on."""
    if select is not None and evaluate is None:
        raise ValueError(f"select={select!r} needs an evaluate function on a validation split{where}")


def open_checkpoints(checkpoint_dir: str | None, select: str | None) -> tuple[Checkpointer | None,
                                                                              Checkpointer | None]:
    """The per-epoch checkpointer in ``checkpoint_dir`` and, when selecting, the best-so-far one beside it."""
    if not checkpoint_dir:
        return None, None
    best = Checkpointer(f"{checkpoint_dir}_best", max_to_keep=1) if select else None
    return Checkpointer(checkpoint_dir), best


@dataclasses.dataclass
class Resumed:
    """Where a run continues: the state and history of its last readable checkpoint (or the initial state)."""

    state: Any
    history: list[Any]
    start_epoch: int
    resumed_from: int | None
    best: Restored | None    # the best-so-far checkpoint, only when saved before ``start_epoch``
    notes: list[str]         # damaged checkpoints skipped, and what that means for the run


def resume(state: Any, checkpointer: Checkpointer | None, best: Checkpointer | None,
           select: str | None) -> Resumed:
    """Restores the newest readable checkpoint into ``state``'s structure, and the best-so-far one.

    The best-so-far checkpoint counts only if it was saved before the resume
    point: one from an epoch that is trained again (its per-epoch checkpoint was
    damaged) is removed, and selection then restarts at the resume point.
    Every note is also logged as a one-line warning.
    """
    history: list[Any] = []
    start_epoch, resumed_from, notes = 0, None, []
    if checkpointer is not None:
        restored, skipped = checkpointer.restore_latest_readable(state)
        notes += skipped
        if restored is not None:
            state, history, resumed_from = restored.state, restored.history, restored.epoch
            start_epoch = resumed_from + 1
            if skipped:
                notes.append(f"resumed from the checkpoint of epoch {resumed_from + 1}")
        elif skipped:
            notes.append("no readable checkpoint left; training starts from the first epoch")

    restored_best = None
    if best is not None:
        restored_best, skipped = best.restore_latest_readable(state)
        notes += skipped
        if restored_best is not None and restored_best.epoch >= start_epoch:
            best.remove(restored_best.epoch)
            restored_best = None
        if restored_best is None and history:
            notes.append(f"the best-{select} checkpoint is missing or unreadable; selection restarts at epoch "
                         f"{start_epoch + 1}")
    for note in notes:
        logger.warning("%s", note)
    return Resumed(state, history, start_epoch, resumed_from, restored_best, notes)


def validation_record(evaluate: Callable[[Any], Mapping[str, float]] | None, state: Any) -> dict[str, float]:
    """``evaluate(state)``'s metrics with a ``val_`` prefix (none without a validation split)."""
    return {} if evaluate is None else {f"val_{k}": float(v) for k, v in evaluate(state).items()}


def recorded_value(history: list[dict[str, Any]], epoch: int, select: str) -> float:
    """The selection metric recorded for ``epoch``."""
    return next(record[f"val_{select}"] for record in history if record["epoch"] == epoch)


def fit(
    state: Any,
    *,
    train_step: Callable,
    train_batches: Callable[[int], Iterable[Mapping[str, np.ndarray]]],
    epochs: int,
    mesh: Mesh,
    evaluate: Callable[[Any], Mapping[str, float]] | None = None,
    select: str | None = None,
    checkpoint_dir: str | None = None,
    progress: Progress = no_progress,
    description: str = "train",
) -> FitResult:
    """Trains ``state`` for ``epochs`` epochs.

    Args:
      state: the initial train state, replicated on ``mesh``.
      train_step: the jitted ``(state, batch) -> (state, metrics)``.
      train_batches: ``epoch -> iterable of host batches`` (dicts of numpy arrays, possibly nested).
      epochs: total number of epochs (including any already checkpointed).
      mesh: the device mesh the batches are split over.
      evaluate: optional ``state -> {metric: value}`` on the validation split;
        its metrics are recorded with a ``val_`` prefix.
      select: a validation metric to select the epoch on (higher is better), or
        None to keep the last epoch.
      checkpoint_dir: where to save a checkpoint after every epoch and resume from.
      progress: a tqdm-like wrapper for the step iterator.
      description: the progress bar's label.
    """
    check_selection(select, evaluate)
    checkpointer, best = open_checkpoints(checkpoint_dir, select)
    resumed = resume(state, checkpointer, best, select)
    state, history = resumed.state, resumed.history
    best_state, best_epoch, best_value = None, -1, -np.inf
    if resumed.best is not None:
        best_state, best_epoch = resumed.best.state, resumed.best.epoch
        best_value = recorded_value(history, best_epoch, select)

    for epoch in range(resumed.start_epoch, epochs):
        started = time.perf_counter()
        step_metrics = []
        batches = train_batches(epoch)
        for batch in progress(batches, desc=f"{description} epoch {epoch + 1}/{epochs}", leave=False):
            state, metrics = train_step(state, shard_batch(batch, mesh))
            step_metrics.append(metrics)
        record: dict[str, Any] = {"epoch": epoch, **mean_metrics(step_metrics, "train_"),
                                  **validation_record(evaluate, state)}
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if select is not None and record[f"val_{select}"] > best_value:
            best_epoch, best_value = epoch, record[f"val_{select}"]
            best_state = jax.tree.map(lambda x: x.copy() if hasattr(x, "copy") else x, state)
            if best is not None:
                best.save(epoch, best_state, [record])
        if checkpointer is not None:
            checkpointer.save(epoch, state, history)

    selected = dict(resumed_from=resumed.resumed_from, notes=resumed.notes)
    if select is None or best_state is None:
        return FitResult(state, history, selected_epoch=len(history) - 1, **selected)
    return FitResult(best_state, history, selected_epoch=best_epoch, **selected)
