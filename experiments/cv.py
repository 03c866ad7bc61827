"""The experiment engine: a run's stages trained and tested over the folds of a protocol.

A run loads its data once (built on first use, resized, clip operations
applied and cached), cuts it into folds (``merjax.data.protocols``) and runs
its stages (``experiments/stages.py``). A stage is a sampler, a model, a loss,
an optimiser and schedule: per fold, the sampler's training samples from the
training subjects (optionally class-balanced), a model trained for a fixed
schedule with an orbax checkpoint per epoch (an interrupted run resumes),
validation on held-out *training* subjects only, then one prediction per test
clip. Metrics of the last stage are pooled over folds, after checking that the
folds test every clip exactly once. Nothing here depends on which model,
sampler or loss a stage uses: those are names in the config.

Nothing computed for another configuration is reused: each fold's (stage's)
folder holds a stamp (the config, a digest of the clips as loaded, the fold's
members, the earlier stage it starts from) and its checkpoints and
``result.json`` are reused only under an equal stamp.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

import flax.serialization

from datasets.build import ensure_all_built
from datasets.core.builder import read_build_report, report_lines
from experiments import layer_choice, provenance, report
from experiments import stages as stages_lib
from experiments import workdir as workdir_lib
from experiments.configs.validate import validate
from merjax import files, stamps
from merjax.data import augment, batches, clip_ops, pipeline, protocols, samplers
from merjax.data import targets as targets_lib
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError
from merjax.models import registry
from merjax.rng import derived_seed
from merjax.train import distributed, evaluate, losses, metrics, optim, prefix_cache, sharding, steps, vectorized
from merjax.train.loop import fit
from merjax.train.state import create_train_state, init_variables


PROTOCOLS = ("kfold_by_subject", "loso", "composite_loso", "cross_database", "kfold_by_sample")
# Protocols whose folds never put one subject on two sides; every output of the others says so.
SUBJECT_INDEPENDENT = frozenset(PROTOCOLS) - {"kfold_by_sample"}
STAMP_FILE = "stamp.json"     # in each fold's (stage's) folder: what its checkpoints and result were computed from
RESULT_FILE = "result.json"
VARIABLES_FILE = "variables.msgpack"   # a stage's final variables, when a later stage starts from them
logger = logging.getLogger(__name__)


def load_data(config: ml_collections.ConfigDict) -> tuple[ClipSet, list[str]]:
    """Builds ``data.name`` where needed (``A+B``: each), loads it resized to ``data.image_size`` and applies the
    clip operations ``data.clip_ops`` (cached); returns the clips and the prepared dataset directories.

    A build made here prints its report (clips per class, every quirk), as
    ``python -m datasets.build`` does.
    """
    # In a multi-process run process 0 builds a missing copy and the others then open it: two
    # processes building one copy at once collide.
    with distributed.process_zero_first(f"build {config.data.name}"):
        prepared = ensure_all_built(config.data.name, config.data.data_dir, config.data.manual_dir or None,
                                    config.data.faces.to_dict(), manual_dir_flag="--config.data.manual_dir")
    for dataset in prepared:
        report = read_build_report(dataset.directory) if dataset.built else None
        if report and jax.process_index() == 0:
            print("\n".join([f"built {dataset.directory}:", *report_lines(report)]))
    clip_sets = [pipeline.load_clips(dataset.directory, config.data.image_size, progress=tqdm)
                 for dataset in prepared]
    clip_set = clip_sets[0] if len(clip_sets) == 1 else pipeline.concat_clip_sets(clip_sets)
    specs = tuple(config.data.clip_ops)
    if specs:
        # Computed once per (clips as loaded, operations) and kept under the data dir for every run that
        # asks for the same: the folder is named by both, and its stamp is checked on reuse.
        source = stamps.clip_set_digest(clip_set)
        folder = stamps.digest_value([source, specs])[:16]
        with distributed.process_zero_first(f"clip operations {specs}"):
            clip_set = clip_ops.apply_clip_ops(clip_set, specs, source_digest=source, progress=tqdm,
                                               cache_dir=os.path.join(config.data.data_dir, "clip_ops", folder))
    return clip_set, [dataset.directory for dataset in prepared]


def load_clip_set(config: ml_collections.ConfigDict) -> ClipSet:
    """The clips of ``load_data``."""
    return load_data(config)[0]


def make_folds(config: ml_collections.ConfigDict, clip_set: ClipSet) -> list[protocols.Fold]:
    """The folds of ``protocol.kind`` over ``clip_set``, each checked (every class has a training example).

    Raises:
      UserError: when the data cannot give these folds (more folds than
        subjects, a class with no training example, a missing database),
        naming the ``--config.protocol`` keys to change.
    """
    kind, protocol = config.protocol.kind, config.protocol
    if kind not in PROTOCOLS:
        raise UserError(f"unknown protocol {kind!r} (--config.protocol.kind); choose one of {PROTOCOLS}")
    common = dict(val_subjects=protocol.val_subjects, class_names=clip_set.class_names)
    subjects = protocols.subject_keys(clip_set.datasets, clip_set.subjects)
    available = len(set(subjects.tolist()))
    if kind == "kfold_by_subject" and protocol.k > available:
        raise UserError(f"--config.protocol.k={protocol.k} folds need at least {protocol.k} subjects, but "
                        f"{clip_set.name} has {available}: set --config.protocol.k={available} (or fewer) or "
                        f"--config.protocol.kind=loso")
    try:
        if kind == "kfold_by_subject":
            return protocols.kfold_by_subject(subjects, clip_set.labels, protocol.k, config.seed, **common)
        if kind == "loso":
            return protocols.loso(clip_set.subjects, clip_set.labels, seed=config.seed, **common)
        if kind == "kfold_by_sample":   # seed 003's protocol: NOT subject-independent (reports say so)
            return protocols.kfold_by_sample(clip_set.labels, protocol.k, config.seed,
                                             val_fraction=protocol.val_fraction if config.train.select else 0.0,
                                             class_names=clip_set.class_names)
        if kind == "composite_loso":
            return protocols.composite_loso(clip_set.datasets, clip_set.subjects, clip_set.labels, seed=config.seed,
                                            **common)
        return [protocols.cross_database(clip_set.datasets, clip_set.subjects, clip_set.labels,
                                         train=protocol.train, test=protocol.test, seed=config.seed, **common)]
    except UserError as error:
        keys = {"kfold_by_subject": "--config.protocol.k, --config.protocol.val_subjects or --config.seed",
                "kfold_by_sample": "--config.protocol.k, --config.protocol.val_fraction or --config.seed",
                "cross_database": "--config.protocol.train/test or --config.protocol.val_subjects"}
        raise UserError(f"{clip_set.name}, --config.protocol.kind={kind}: {error}; the keys to change: "
                        f"{keys.get(kind, '--config.protocol.val_subjects or --config.seed')}") from error


@dataclasses.dataclass
class StageSetup:
    """What the folds of one stage share: the model, sampler, targets, bound steps and inputs.

    With a frozen, cached prefix (``train.freeze_until``, ``train.cache_prefix``)
    ``model`` is the trainable suffix, ``inputs`` the clip set of cached
    features (stream ``features``) and ``sampler`` reads them; otherwise
    ``inputs`` is the clip set itself. ``variables`` are the stage's initial
    variables (shared by every fold, or one fold's when it starts from that
    fold's earlier stage).
    """

    config: ml_collections.ConfigDict
    model: Any
    sampler: samplers.Sampler
    variables: Any
    mesh: Any
    steps: BoundSteps
    inputs: ClipSet
    targets: dict[str, np.ndarray]      # per target, its value for every clip
    classes: dict[str, int]             # per target, its number of classes
    frozen: Any = None
    frozen_prefix: dict[str, Any] | None = None   # what was frozen and cached, for the report
    tx: Any = None                                # the optimiser (its learning rate: the train state's schedule)


def augmentation(config: ml_collections.ConfigDict) -> batches.Augmentation | None:
    """The training augmentation of ``config.augment`` (None when it does nothing)."""
    augment = batches.Augmentation(config.augment.flip_prob, config.augment.max_rotation,
                                   mirror_pairs=clip_ops.mirror_pairs(tuple(config.data.clip_ops)))
    return augment if augment.active else None


def example_inputs(config: ml_collections.ConfigDict, sampler: samplers.Sampler, clip_set: ClipSet) -> dict[str, Any]:
    """Model inputs shaped like one training batch (the first training sample repeated), to initialise the model."""
    row = sampler.train_rows(clip_set, np.arange(1))[0]
    sample = sampler.load_train(clip_set, row, np.random.default_rng(0))
    return batches.stack([sample] * config.train.batch_size)


def initial_variables(config: ml_collections.ConfigDict, model: Any, sampler: samplers.Sampler,
                      clip_set: ClipSet) -> Any:
    """Random initial variables, with the backbone's pretrained weights when ``model.weights`` names a file."""
    variables = init_variables(model, example_inputs(config, sampler, clip_set), jax.random.key(config.seed))
    if config.model.weights:
        variables = registry.import_backbone_weights(config.model, variables, config.model.weights)
    return variables


@dataclasses.dataclass(frozen=True)
class BoundSteps:
    """The train step with a stage's loss bound in (pure, for ``vectorized.fit_folds``, and jitted) and the
    jitted eval step."""

    pure_train_step: Any
    train_step: Any
    eval_step: Any


_BOUND_STEPS: dict[tuple[Any, ...], BoundSteps] = {}


def bound_steps(config: ml_collections.ConfigDict, mesh: Any) -> BoundSteps:
    """The steps of ``config.loss``; one set per loss and mesh, so that every fold and stage with that loss
    reuses one compiled program per model shape."""
    key = (repr(config.loss.to_dict()), mesh)
    if key not in _BOUND_STEPS:
        pure = functools.partial(steps.train_step, objective=losses.make_loss(config.loss))
        _BOUND_STEPS[key] = BoundSteps(pure, sharding.jit_train_step(pure, mesh),
                                       sharding.jit_eval_step(steps.eval_step, mesh))
    return _BOUND_STEPS[key]


def setup_stage(config: ml_collections.ConfigDict, clip_set: ClipSet, workdir: str | None = None,
                variables: Any = None, *, cache: bool = True) -> StageSetup:
    """The model, sampler, targets, initial variables (``variables`` or fresh), bound steps, optimiser and (with a
    frozen prefix, unless ``cache`` is False) the feature cache of a stage."""
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.train.batch_size, mesh)
    sharding.check_batch_size(config.train.eval_batch_size, mesh)
    freeze_until = config.train.freeze_until or None
    targets, classes = targets_lib.clip_targets(tuple(config.targets), clip_set)
    model = registry.create_model(config.model, classes[steps.MAIN_TARGET], frozen_until=freeze_until)
    sampler = samplers.create_sampler(config.sampler, augment=augmentation(config))
    sampler.check(clip_set)
    if variables is None:
        variables = initial_variables(config, model, sampler, clip_set)
    setup = StageSetup(config=config, model=model, sampler=sampler, variables=variables, mesh=mesh,
                       steps=bound_steps(config, mesh), inputs=clip_set, targets=targets, classes=classes)
    if freeze_until is not None:
        setup.frozen = optim.frozen_mask(variables["params"], freeze_until, model.backbone)
        setup.frozen_prefix = {"freeze_until": freeze_until, "cached": bool(config.train.cache_prefix)}
        if config.train.cache_prefix and cache:
            cache_prefix(setup, workdir)
    # One optimiser object for every fold of the stage, so that folds can be trained together (vectorised).
    setup.tx = optim.make_optimizer(config.train, frozen=setup.frozen)
    return setup


def cache_prefix(setup: StageSetup, workdir: str | None) -> None:
    """Computes the frozen prefix once per frame (and augmented version) and makes ``setup`` train the suffix on
    the cached features."""
    config, freeze_until = setup.config, setup.config.train.freeze_until
    if tuple(config.sampler.streams) != ("frames",):
        raise UserError(f"--config.train.cache_prefix caches the backbone on the 'frames' stream, but the sampler "
                        f"reads {tuple(config.sampler.streams)}: set --config.train.cache_prefix=False")
    started = time.perf_counter()
    # A disk cache is one set of files in the workdir: process 0 writes it, the others then reuse it.
    with distributed.process_zero_first(f"prefix cache {freeze_until}"):
        cache = prefix_cache.build_prefix_cache(
            setup.model, setup.variables, setup.inputs, freeze_until,
            batch_size=config.train.cache_batch_frames,
            variants=config.train.cache_variants,
            augmentation=augmentation(config),
            seed=config.seed, dtype=np.dtype(config.train.cache_dtype),
            max_memory_bytes=int(config.train.cache_memory_gb * 2**30),
            directory=os.path.join(workdir, f"prefix_cache_{freeze_until}") if workdir else None,
            progress=tqdm)
    setup.model = registry.create_model(config.model, setup.classes[steps.MAIN_TARGET], frozen_until=freeze_until,
                                        input_endpoint=freeze_until)
    setup.inputs = cache.clip_set
    setup.sampler = setup.sampler.reading(("features",), augment=None)
    setup.frozen_prefix.update(cache.describe(), build_seconds=round(time.perf_counter() - started, 2))


def training_samples(setup: StageSetup, clip_indices: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Training samples of a fold (the sampler's rows, optionally class-balanced) and a record of how they were
    made (counts per class, multipliers, padding)."""
    config, clip_set = setup.config, setup.inputs
    rows = setup.sampler.train_rows(clip_set, clip_indices)
    labels = setup.targets[steps.MAIN_TARGET][rows[:, 0]]
    original = augment.per_class_counts(labels, clip_set.num_classes)
    record: dict[str, Any] = {
        "clips": int(len(clip_indices)),
        "samples_per_class": dict(zip(clip_set.class_names, original.tolist())),
        **setup.sampler.describe(clip_set, clip_indices),
    }
    balance = config.sampler.balance_per_class
    if balance:
        chosen = augment.balanced_resample(labels, balance, np.random.default_rng(seed),
                                           num_classes=clip_set.num_classes)
        rows = rows[chosen]
        multipliers = augment.balanced_multipliers(original.tolist(), balance)
        record["multipliers"] = {clip_set.class_names[c]: round(m, 3) for c, m in multipliers.items()}
        record["balanced_samples_per_class"] = dict(zip(
            clip_set.class_names, augment.per_class_counts(labels[chosen], clip_set.num_classes).tolist()))
    return rows, record


@dataclasses.dataclass
class Training:
    """A fold's training set-up: its initial state, batches per epoch and a record of its samples."""

    state: Any
    batches: Callable[[int], Any]
    steps_per_epoch: int
    record: dict[str, Any]


def prepare_training(setup: StageSetup, clip_indices: np.ndarray, seed: int) -> Training:
    """Samples, class weights, batches and the replicated initial state for training on ``clip_indices``."""
    config = setup.config
    rows, record = training_samples(setup, clip_indices, seed)
    weight_tables: dict[str, np.ndarray] = {}
    if config.loss.class_weights:
        # From the fold's training samples only: no test subject in the class weights (or focal α).
        for name, values in setup.targets.items():
            weight_tables[name] = losses.class_weights(values[rows[:, 0]], setup.classes[name])
        record["class_weights"] = dict(zip(setup.inputs.class_names,
                                           np.round(weight_tables[steps.MAIN_TARGET], 4).tolist()))

    def epoch_batches(epoch: int):
        return batches.train_batches(setup.sampler, setup.inputs, rows, setup.targets, weight_tables=weight_tables,
                                     batch_size=config.train.batch_size, seed=seed, epoch=epoch,
                                     num_threads=config.data.num_threads)

    steps_per_epoch = len(rows) // config.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"only {len(rows)} training samples for --config.train.batch_size="
                        f"{config.train.batch_size}: lower the batch size (or raise sampler.balance_per_class)")
    state = create_train_state(setup.model, setup.variables,
                               setup.tx, jax.random.key(seed), steps_per_epoch=steps_per_epoch,
                               learning_rate_fn=optim.learning_rate_schedule(config.train))
    return Training(state=sharding.replicate(state, setup.mesh), batches=epoch_batches,
                    steps_per_epoch=steps_per_epoch, record=record)


def predict_clips(setup: StageSetup, state: Any, clip_indices: np.ndarray) -> dict[str, Any]:
    """One prediction per clip (the mean log-probabilities of its evaluation samples) and, for samplers of
    samples smaller than a clip (frames), the metrics of every sample."""
    clip_set = setup.inputs
    groups, log_probs = evaluate.predict(
        setup.steps.eval_step, state,
        batches.eval_batches(setup.sampler, clip_set, clip_indices, batch_size=setup.config.train.eval_batch_size),
        setup.mesh)
    result: dict[str, Any] = {}
    if setup.sampler.sample_level:
        sample_labels = clip_set.labels[groups]
        result["sample_level"] = {
            "name": setup.sampler.sample_level,
            **metrics.classification_metrics(sample_labels, log_probs.argmax(-1), clip_set.num_classes),
            "labels": sample_labels.tolist(), "predictions": log_probs.argmax(-1).tolist()}
    clips_seen, clip_log_probs = evaluate.mean_by_group(groups, log_probs)
    labels = clip_set.labels[clips_seen]
    result.update(
        clips=clip_set.clip_ids[clips_seen].tolist(),
        labels=labels.tolist(),
        predictions=clip_log_probs.argmax(-1).tolist(),
        log_probs=np.round(clip_log_probs, 5).tolist(),
        loss=evaluate.nll(clip_log_probs, labels),
    )
    return result


def run_stamp(config: ml_collections.ConfigDict, clip_set: ClipSet) -> dict[str, Any]:
    """What every fold's results depend on: the configuration (every stage's) and a digest of the clips as loaded."""
    return {"config": workdir_lib.results_config(config),
            "data": {"name": clip_set.name, "clips": len(clip_set), "digest": stamps.clip_set_digest(clip_set)}}


def fold_stamp(stamp: dict[str, Any], clip_set: ClipSet, fold: protocols.Fold, stage: str, freeze_until: str,
               init_from: str | None = None) -> dict[str, Any]:
    """``run_stamp`` plus the fold and stage: the fold's name, the clips of each side (digests), the stage, its
    frozen prefix and the stamp digest of the earlier stage it starts from."""
    sides = {side: stamps.digest_value(clip_set.clip_ids[getattr(fold, side)].tolist()) for side in protocols.SIDES}
    return {**stamp, "fold": {"name": fold.name, "freeze_until": freeze_until, **sides},
            "stage": {"name": stage, "init_from": init_from}}


def checked_fold_dir(fold_dir: str, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """Checks what an earlier run left in ``fold_dir`` against ``stamp``; returns its finished result, if any.

    Raises:
      UserError: when the fold's checkpoints or result were computed with
        another configuration, other data or other fold members (naming what
        differs), or carry no stamp.
    """
    stamp_file, result_file = os.path.join(fold_dir, STAMP_FILE), os.path.join(fold_dir, RESULT_FILE)
    if not os.path.isdir(fold_dir) or not os.path.exists(stamp_file) and not _outputs_in(fold_dir):
        return None
    fix = "rerun with --overwrite to discard the earlier run's outputs, or pass another --workdir"
    if not os.path.exists(stamp_file):
        raise UserError(f"{fold_dir} holds outputs without a stamp of what they were computed from "
                        f"(an older merjax, or another program); {fix}")
    changed = stamps.differences(files.read_json(stamp_file, "fold stamp"), stamp)
    if changed:
        raise UserError(f"{fold_dir} was computed from something else ({'; '.join(changed)}); {fix}")
    if not os.path.exists(result_file):
        return None
    try:
        result = files.read_json(result_file, "fold result")
    except UserError as error:
        logger.warning("%s; the fold is evaluated again from its checkpoints", error)
        return None
    if result.get("stamp") != stamps.digest_value(stamp):
        raise UserError(f"{result_file} does not belong to the stamp in {stamp_file}; {fix}")
    return result


def _outputs_in(fold_dir: str) -> bool:
    """Whether ``fold_dir`` holds outputs: a file or a ``checkpoints`` folder. Other folders are not outputs: a
    stage-fold that starts from its earlier stage writes its own prefix cache there before its stamp."""
    return any(not os.path.isdir(os.path.join(fold_dir, entry)) or entry == "checkpoints"
               for entry in os.listdir(fold_dir))


def training_side(config: ml_collections.ConfigDict, fold: protocols.Fold) -> tuple[np.ndarray, np.ndarray]:
    """The clips a fold trains on and validates on.

    Validation subjects serve ``train.select`` (choosing the epoch on them) and
    the validation learning curves. With ``train.select=''`` the last epoch is
    kept, so nothing is chosen on them and they join the training side.
    """
    if config.train.select:
        return fold.train, fold.val
    return np.union1d(fold.train, fold.val), fold.val[:0]


def save_variables(stage_dir: str, state: Any) -> None:
    """The parameters and BatchNorm statistics a stage ended with, for a later stage (``VARIABLES_FILE``)."""
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    files.atomic_write_bytes(os.path.join(stage_dir, VARIABLES_FILE), flax.serialization.msgpack_serialize(variables))


def load_variables(stage_dir: str) -> Any:
    path = os.path.join(stage_dir, VARIABLES_FILE)
    try:
        with open(path, "rb") as f:
            return flax.serialization.msgpack_restore(f.read())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is missing or unreadable ({error}); rerun with --overwrite") from None


@dataclasses.dataclass
class StageFold:
    """One stage of one fold, ready to train: where it lives, its stamp, its training and validation set-up."""

    setup: StageSetup
    fold: protocols.Fold
    stage_dir: str
    stamp: dict[str, Any]
    training: Training
    train_clips: np.ndarray
    val_clips: np.ndarray
    init_record: dict[str, Any] | None
    keep_variables: bool

    def validate(self, state: Any) -> dict[str, float]:
        prediction = predict_clips(self.setup, state, self.val_clips)
        scores = metrics.classification_metrics(prediction["labels"], prediction["predictions"],
                                                self.setup.inputs.num_classes)
        return {"loss": prediction["loss"], "accuracy": scores["accuracy"], "uf1": scores["uf1"],
                "uar": scores["uar"]}

    @property
    def evaluate(self) -> Callable[[Any], dict[str, float]] | None:
        return self.validate if len(self.val_clips) else None


def begin_stage_fold(setup: StageSetup, fold: protocols.Fold, fold_index: int, stage_dir: str,
                     stamp: dict[str, Any], *, init_record: dict[str, Any] | None = None,
                     keep_variables: bool = False) -> StageFold | dict[str, Any]:
    """The finished result of an earlier run with the same stamp, or the stage-fold set up to train (its
    stamp written)."""
    finished = checked_fold_dir(stage_dir, stamp)
    # Every process checks the folder before process 0 writes to it, so that all make one decision.
    distributed.barrier(f"checked {stage_dir}")
    if finished is not None:
        return finished
    if jax.process_index() == 0:
        files.atomic_write_json(os.path.join(stage_dir, STAMP_FILE), stamp)
    train_clips, val_clips = training_side(setup.config, fold)
    training = prepare_training(setup, train_clips, derived_seed(setup.config.seed, fold_index))
    return StageFold(setup, fold, stage_dir, stamp, training, train_clips, val_clips, init_record, keep_variables)


def run_stage_fold(setup: StageSetup, fold: protocols.Fold, fold_index: int, stage_dir: str,
                   stamp: dict[str, Any], *, init_record: dict[str, Any] | None = None,
                   keep_variables: bool = False) -> dict[str, Any]:
    """Trains one stage of one fold and tests it, or returns its finished result from an earlier run with the
    same stamp; with ``keep_variables`` the final parameters are saved for a later stage."""
    begun = begin_stage_fold(setup, fold, fold_index, stage_dir, stamp, init_record=init_record,
                             keep_variables=keep_variables)
    if isinstance(begun, dict):
        return begun
    fitted = fit(
        begun.training.state,
        train_step=setup.steps.train_step,
        train_batches=begun.training.batches,
        epochs=setup.config.train.epochs,
        mesh=setup.mesh,
        evaluate=begun.evaluate,
        select=setup.config.train.select or None,
        checkpoint_dir=os.path.join(stage_dir, "checkpoints"),
        progress=tqdm,
        description=os.path.relpath(stage_dir, os.path.dirname(os.path.dirname(stage_dir))),
    )
    return finish_stage_fold(begun, fitted)


def fit_together(begun: list[StageFold], workdir: str, stage: str) -> list[Any]:
    """Trains stage-folds of one model shape as one vectorised program (``merjax.train.vectorized``); its
    checkpoints are stamped by the folds' stamps, so a resumed run continues only the same set of folds."""
    first = begun[0].setup
    digest = stamps.digest_value([item.stamp for item in begun])
    return vectorized.fit_folds(
        [item.training.state for item in begun],
        train_step=first.steps.pure_train_step,
        train_batches=[item.training.batches for item in begun],
        steps_per_epoch=[item.training.steps_per_epoch for item in begun],
        epochs=first.config.train.epochs,
        mesh=first.mesh,
        evaluate=[item.evaluate for item in begun],
        select=first.config.train.select or None,
        checkpoint_dir=os.path.join(workdir, f"vectorized_{stage}", digest[:16], "checkpoints"),
        progress=tqdm,
        description=f"{stage}: {len(begun)} folds together",
    )


def finish_stage_fold(begun: StageFold, fitted: Any) -> dict[str, Any]:
    """Tests a trained stage-fold and writes its result (and, when a later stage needs them, its variables)."""
    setup, fold, training = begun.setup, begun.fold, begun.training
    clip_set = setup.inputs   # the clips (or their cached features: same ids, labels and subjects)
    train_clips, val_clips = begun.train_clips, begun.val_clips
    result = {
        "name": fold.name,
        "stamp": stamps.digest_value(begun.stamp),
        "train_subjects": sorted(set(clip_set.subjects[train_clips].tolist())),
        "val_subjects": sorted(set(clip_set.subjects[val_clips].tolist())),
        "test_subjects": sorted(set(clip_set.subjects[fold.test].tolist())),
        "training_samples": training.record,
        "steps_per_epoch": training.steps_per_epoch,
        "history": fitted.history,
        "selected_epoch": fitted.selected_epoch,
        "resumed_from_epoch": fitted.resumed_from,
        "resume_notes": fitted.notes,
        "frozen_prefix": setup.frozen_prefix,
        "init": begun.init_record,
        "test": predict_clips(setup, fitted.state, fold.test) if len(fold.test) else None,
    }
    if jax.process_index() == 0:
        if begun.keep_variables:
            save_variables(begun.stage_dir, fitted.state)
        files.atomic_write_json(os.path.join(begun.stage_dir, RESULT_FILE), result)
    return result


def check_coverage(config: ml_collections.ConfigDict, clip_set: ClipSet, folds: list[protocols.Fold],
                   results: list[dict[str, Any]]) -> str:
    """Checks that the folds' test predictions cover the protocol's test clips exactly once; says how.

    Every protocol but ``cross_database`` tests every clip once;
    ``cross_database`` tests every clip of the test database once.

    Raises:
      RuntimeError: naming a clip tested twice, never, or not by the fold that owns it.
    """
    tested = collections.Counter(clip for result in results for clip in result["test"]["clips"])
    twice = [clip for clip, count in tested.items() if count > 1]
    if twice:
        raise RuntimeError(f"clip {twice[0]!r} is tested {tested[twice[0]]} times ({len(twice)} such clips)")
    for fold, result in zip(folds, results):
        expected = set(clip_set.clip_ids[fold.test].tolist())
        if set(result["test"]["clips"]) != expected:
            raise RuntimeError(f"fold {fold.name}: its result tests other clips than the fold's test side")
    if config.protocol.kind == "cross_database":
        expected = set(clip_set.clip_ids[clip_set.datasets == config.protocol.test].tolist())
        scope = f"every clip of {config.protocol.test}"
    else:
        expected = set(clip_set.clip_ids.tolist())
        scope = "every clip"
    missing = sorted(expected - set(tested))
    if missing:
        raise RuntimeError(f"{len(missing)} clip(s) are never tested, e.g. {missing[0]!r}")
    return f"{scope} tested exactly once ({len(expected)} clips, {len(folds)} folds)"


def fold_configs(config: ml_collections.ConfigDict, clip_set: ClipSet,
                 folds: list[protocols.Fold]) -> list[ml_collections.ConfigDict]:
    """Each fold's config: ``config`` itself, or with the fold's own ``train.freeze_until`` read from
    ``train.freeze_from`` (per-fold layer choices of ``experiments.gradcam_layers``, made on training subjects;
    ``{seed}`` in the path stands for the run's seed, so that ``config.seeds`` reads one choice per seed)."""
    if not config.train.freeze_from:
        return [config] * len(folds)
    path = layer_choice.choice_file(config.train.freeze_from, config.seed)
    chosen = layer_choice.freeze_until_per_fold(path, config, folds, clip_set.clip_ids)
    configs = []
    for fold in folds:
        fold_config = config.copy_and_resolve_references()
        with fold_config.unlocked():
            fold_config.train.freeze_until = chosen[fold.name]
        configs.append(fold_config)
    return configs


class Setups:
    """The stage set-ups of a run, built once per (stage, frozen prefix) and shared by the folds that start
    from the stage's initial variables; a fold that starts from its own earlier stage gets its own."""

    def __init__(self, clip_set: ClipSet, workdir: str):
        self._clip_set, self._workdir = clip_set, workdir
        self._shared: dict[tuple[str, str, bool], StageSetup] = {}

    def shared(self, stage: str, config: ml_collections.ConfigDict, *, cache: bool = True) -> StageSetup:
        key = (stage, config.train.freeze_until, cache)
        if key not in self._shared:
            self._shared[key] = setup_stage(config, self._clip_set, self._workdir, cache=cache)
        return self._shared[key]

    def started_from(self, stage: str, config: ml_collections.ConfigDict, earlier_dir: str, stage_dir: str,
                     where: str) -> tuple[StageSetup, dict[str, Any]]:
        """A set-up whose initial variables take ``config.init``'s subtrees from the stage saved in ``earlier_dir``."""
        fresh = self.shared(stage, config, cache=False)
        variables, record = stages_lib.transfer(fresh.variables, load_variables(earlier_dir),
                                                tuple(config.init.include), tuple(config.init.exclude), where)
        record["from"] = config.init.from_stage
        if config.train.freeze_until and config.train.cache_prefix:
            # The cached prefix depends on the variables: this fold's own cache, in its own folder.
            return setup_stage(config, self._clip_set, stage_dir, variables=variables), record
        return dataclasses.replace(fresh, variables=variables), record


def run_scope_stage(stage: stages_lib.Stage, workdir: str, saved: dict[str, str]) -> dict[str, Any]:
    """Trains a stage of scope 'run' once, on every clip of its own data (never the run's: ``stages.resolve``)."""
    config = stage.config
    clip_set, _ = load_data(config)
    fold = protocols.Fold(name=stage.name, train=np.arange(len(clip_set)), val=np.zeros(0, np.int64),
                          test=np.zeros(0, np.int64))
    stage_dir = os.path.join(workdir, stage.name)
    init_record, setup = None, None
    if stage.init_from:
        setup, init_record = Setups(clip_set, stage_dir).started_from(
            stage.name, config, saved[stage.init_from], stage_dir, f"--config.stages.{stage.name}.init")
    setup = setup or setup_stage(config, clip_set, stage_dir)
    stamp = fold_stamp(run_stamp(config, clip_set), clip_set, fold, stage.name, config.train.freeze_until,
                       saved_stamp_digest(saved.get(stage.init_from)))
    saved[stage.name] = stage_dir
    return run_stage_fold(setup, fold, 0, stage_dir, stamp, init_record=init_record, keep_variables=True)


def saved_stamp_digest(stage_dir: str | None) -> str | None:
    """The digest of the stamp an earlier stage was computed under (part of a later stage's stamp)."""
    if stage_dir is None:
        return None
    return stamps.digest_value(files.read_json(os.path.join(stage_dir, STAMP_FILE), "stage stamp"))


def stage_fold_dir(workdir: str, fold: protocols.Fold, stage: str, single: bool) -> str:
    """Where one stage of one fold writes: ``workdir/<fold>``, or ``workdir/<fold>/<stage>`` in a staged run."""
    return os.path.join(workdir, fold.name) if single else os.path.join(workdir, fold.name, stage)


def run_fold_stage(stage: stages_lib.Stage, clip_set: ClipSet, folds: list[protocols.Fold], stamp: dict[str, Any],
                   workdir: str, saved: list[dict[str, str]], *, keep_variables: bool,
                   single: bool) -> list[dict[str, Any]]:
    """One stage of every fold: each fold after the other, or (``train.vectorize_folds``) the folds of one model
    shape as one vectorised program. ``saved[i]`` maps fold i's finished stages to their folders."""
    configs = fold_configs(stage.config, clip_set, folds)
    setups = Setups(clip_set, workdir)
    results: dict[int, dict[str, Any]] = {}
    # Folds stack when they share the model and optimiser objects (a fold with its own cached prefix does not).
    pending: dict[tuple[int, int], list[tuple[int, StageFold]]] = collections.defaultdict(list)
    for index, (fold, config) in enumerate(zip(folds, configs)):
        stage_dir = stage_fold_dir(workdir, fold, stage.name, single)
        init_record = None
        if stage.init_from:
            setup, init_record = setups.started_from(stage.name, config, saved[index][stage.init_from], stage_dir,
                                                     f"--config.stages.{stage.name}.init")
        else:
            setup = setups.shared(stage.name, config)
        fold_stamp_ = fold_stamp(stamp, clip_set, fold, stage.name, config.train.freeze_until,
                                 saved_stamp_digest(saved[index].get(stage.init_from)))
        saved[index][stage.name] = stage_dir
        if not config.train.vectorize_folds:
            results[index] = run_stage_fold(setup, fold, index, stage_dir, fold_stamp_,
                                            init_record=init_record, keep_variables=keep_variables)
            continue
        begun = begin_stage_fold(setup, fold, index, stage_dir, fold_stamp_, init_record=init_record,
                                 keep_variables=keep_variables)
        if isinstance(begun, dict):
            results[index] = begun
        else:
            pending[(id(setup.model), id(setup.tx))].append((index, begun))
    for group in pending.values():
        fitted = fit_together([begun for _, begun in group], workdir, stage.name)
        for (index, begun), fold_fit in zip(group, fitted):
            results[index] = finish_stage_fold(begun, fold_fit)
    return [results[index] for index in range(len(folds))]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs every stage of the cross-validation and writes the reports; returns the summary (of the last stage).

    Stages of scope 'run' train once; then each fold runs its stages in order
    (``experiments/stages.py``). A stage-fold finished by an earlier run with
    the same stamp is reused, an unfinished one resumes from its checkpoints,
    and anything computed from another configuration or other data is refused
    (``checked_fold_dir``). The caller owns the workdir
    (``experiments.workdir.claim``: lock + config check).
    """
    from experiments import pretrain   # imports this module

    started = time.time()
    config = pretrain.with_weights_resolved(config)   # 'pretrained:synthetic_faces': pretrained on first use
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    stage_list = stages_lib.resolve(config)
    clip_set, dataset_dirs = load_data(config)
    record = provenance.collect(config, dataset_dirs)
    folds = make_folds(config, clip_set)
    stamp = run_stamp(config, clip_set)
    record["data_digest"] = stamp["data"]["digest"]
    saved_by_run: dict[str, str] = {}
    stage_results: dict[str, list[dict[str, Any]]] = {}
    for stage in stage_list:
        if stage.scope == "run":
            stage_results[stage.name] = [run_scope_stage(stage, workdir, saved_by_run)]
    fold_stages = [stage for stage in stage_list if stage.scope == "fold"]
    single = len(stage_list) == 1
    # This invocation's wall time does not include the stage-folds an earlier run finished: count them.
    record["stage_folds"] = {
        "total": len(fold_stages) * len(folds),
        "reused": sum(os.path.exists(os.path.join(stage_fold_dir(workdir, fold, stage.name, single), RESULT_FILE))
                      for stage in fold_stages for fold in folds)}
    needed = {stage.init_from for stage in stage_list if stage.init_from}
    saved = [dict(saved_by_run) for _ in folds]      # per fold: stage name -> the folder of its variables
    for stage in fold_stages:
        stage_results[stage.name] = run_fold_stage(stage, clip_set, folds, stamp, workdir, saved,
                                                   keep_variables=stage.name in needed, single=single)
    results = stage_results[fold_stages[-1].name]
    coverage = check_coverage(config, clip_set, folds, results)
    record["wall_seconds"] = round(time.time() - started, 1)
    summary = report.summarize(config, clip_set, results, provenance=record)
    summary["coverage"] = coverage
    if len(stage_list) > 1:
        summary["stages"] = report.stage_summaries(clip_set, stage_results, fold_stages[-1].name)
    report.write(workdir, summary, results, clip_set.class_names)
    return summary
