"""Subject-wise cross-validation of a frame or clip classifier: the engine of seed 001's experiments.

For each fold: training samples (sliding windows of N frames, or single frames
for Exp-I) from the training subjects, optionally resampled to a target count
per class (seed 001 Table 1); a model trained for a fixed schedule with an
orbax checkpoint per epoch (an interrupted run resumes); validation on held-out
*training* subjects only; then one prediction per test clip. Metrics are pooled
over folds, after checking that the folds test every clip exactly once.

Nothing computed for another configuration is reused: each fold's folder holds
a stamp (the config, a digest of the clips as loaded, the fold's members) and
its checkpoints and ``result.json`` are reused only under an equal stamp.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from datasets.build import ensure_all_built
from datasets.core.builder import read_build_report, report_lines
from experiments import layer_choice, provenance, report
from experiments import workdir as workdir_lib
from experiments.configs.validate import validate
from merjax import files, stamps
from merjax.data import augment, pipeline, protocols
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError
from merjax.models import create_model
from merjax.train import distributed, evaluate, losses, metrics, optim, prefix_cache, sharding, steps
from merjax.train.loop import fit
from merjax.train.state import create_train_state, init_variables
from merjax.weights.backbone import with_vggface2_backbone


PROTOCOLS = ("kfold_by_subject", "loso", "composite_loso", "cross_database")
STAMP_FILE = "stamp.json"     # in each fold's folder: what its checkpoints and result were computed from
RESULT_FILE = "result.json"
logger = logging.getLogger(__name__)


def load_data(config: ml_collections.ConfigDict) -> tuple[ClipSet, list[str]]:
    """Builds ``data.name`` where needed (``A+B``: each), loads it resized to ``data.image_size``; returns the
    clips and the prepared dataset directories.

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
        if kind == "composite_loso":
            return protocols.composite_loso(clip_set.datasets, clip_set.subjects, clip_set.labels, seed=config.seed,
                                            **common)
        return [protocols.cross_database(clip_set.datasets, clip_set.subjects, clip_set.labels,
                                         train=protocol.train, test=protocol.test, seed=config.seed, **common)]
    except UserError as error:
        keys = {"kfold_by_subject": "--config.protocol.k, --config.protocol.val_subjects or --config.seed",
                "cross_database": "--config.protocol.train/test or --config.protocol.val_subjects"}
        raise UserError(f"{clip_set.name}, --config.protocol.kind={kind}: {error}; the keys to change: "
                        f"{keys.get(kind, '--config.protocol.val_subjects or --config.seed')}") from error


def training_samples(config: ml_collections.ConfigDict, clip_set: ClipSet, clip_indices: np.ndarray,
                     seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Training samples of a fold and a record of how they were made (counts per class, padding)."""
    is_clip_model = config.model.kind == "clip"
    if is_clip_model:
        samples = pipeline.window_samples(clip_set, clip_indices, config.data.window,
                                          config.data.train_stride, config.data.pad_short)
    else:
        samples = pipeline.frame_samples(clip_set, clip_indices)
    labels = pipeline.sample_labels(clip_set, samples)
    original = augment.per_class_counts(labels, clip_set.num_classes)
    record: dict[str, Any] = {
        "clips": int(len(clip_indices)),
        "samples_per_class": dict(zip(clip_set.class_names, original.tolist())),
    }
    if is_clip_model:
        record["padded_short_clips"] = int(np.sum(clip_set.lengths[clip_indices] < config.data.window))
    if config.data.balance_per_class:
        chosen = augment.balanced_resample(labels, config.data.balance_per_class,
                                           np.random.default_rng(seed), num_classes=clip_set.num_classes)
        samples = samples[chosen]
        multipliers = augment.balanced_multipliers(original.tolist(), config.data.balance_per_class)
        record["multipliers"] = {clip_set.class_names[c]: round(m, 3) for c, m in multipliers.items()}
        record["balanced_samples_per_class"] = dict(zip(
            clip_set.class_names, augment.per_class_counts(labels[chosen], clip_set.num_classes).tolist()))
    return samples, record


def eval_batches(config: ml_collections.ConfigDict, clip_set: ClipSet, clip_indices: np.ndarray, max_length: int):
    if config.model.kind == "clip":
        return pipeline.clip_eval_batches(
            clip_set, clip_indices, batch_size=config.train.eval_batch_size, window_size=config.data.window,
            stride=config.data.eval_stride, pad_short=config.data.pad_short, max_length=max_length)
    return pipeline.frame_eval_batches(clip_set, clip_indices, batch_size=config.train.eval_batch_size)


def predict_clips(eval_step, state, config, clip_set, clip_indices, mesh, max_length) -> dict[str, Any]:
    """Predictions for whole clips (and, for frame models, for every frame)."""
    indices, log_probs = evaluate.predict(
        eval_step, state, eval_batches(config, clip_set, clip_indices, max_length), mesh)
    result: dict[str, Any] = {}
    if config.model.kind == "frame":
        frame_labels = clip_set.labels[indices]
        result["frame_level"] = metrics.classification_metrics(
            frame_labels, log_probs.argmax(-1), clip_set.num_classes)
        result["frame_labels"] = frame_labels.tolist()
        result["frame_predictions"] = log_probs.argmax(-1).tolist()
    clip_indices_seen, clip_log_probs = evaluate.mean_by_group(indices, log_probs)
    labels = clip_set.labels[clip_indices_seen]
    result.update(
        clips=clip_set.clip_ids[clip_indices_seen].tolist(),
        labels=labels.tolist(),
        predictions=clip_log_probs.argmax(-1).tolist(),
        log_probs=np.round(clip_log_probs, 5).tolist(),
        loss=evaluate.nll(clip_log_probs, labels),
    )
    return result


@dataclasses.dataclass
class Compiled:
    """What every fold of a run shares, so that the run compiles once.

    All folds start from the same initial variables (as fine-tuning from
    published weights would); optimisers are reused for equal epoch lengths
    (equal with class balancing), so the jitted steps see one state structure.
    With a frozen, cached prefix (``train.freeze_until``, ``train.cache_prefix``)
    ``model`` is the trainable suffix and ``inputs`` holds the cached features the
    steps consume; otherwise ``inputs`` is the clip set itself.
    """

    model: Any
    variables: Any
    mesh: Any
    train_step: Any
    eval_step: Any
    inputs: ClipSet
    cache: prefix_cache.PrefixCache | None = None
    frozen: Any = None
    frozen_prefix: dict[str, Any] | None = None   # what was frozen and cached, for the report
    optimizers: dict[int, Any] = dataclasses.field(default_factory=dict)

    def optimizer(self, train_config: ml_collections.ConfigDict, steps_per_epoch: int):
        if steps_per_epoch not in self.optimizers:
            self.optimizers[steps_per_epoch] = optim.make_optimizer(train_config, steps_per_epoch, self.frozen)
        return self.optimizers[steps_per_epoch]


def example_batch(config: ml_collections.ConfigDict, clip_set: ClipSet) -> dict[str, np.ndarray]:
    """Zeros shaped like one training batch, to initialise the model."""
    size, batch = config.data.image_size, config.train.batch_size
    if config.model.kind == "frame":
        return {"frames": np.zeros((batch, size, size, 3), np.uint8)}
    return {"frames": np.zeros((batch, config.data.window, size, size, 3), np.uint8),
            "mask": np.ones((batch, config.data.window), bool)}


def initial_variables(config: ml_collections.ConfigDict, model: Any, clip_set: ClipSet) -> Any:
    """Random initial variables, with the backbone from ``model.weights`` when a file is given."""
    variables = init_variables(model, example_batch(config, clip_set), jax.random.key(config.seed))
    if config.model.weights:
        variables = with_vggface2_backbone(variables, config.model.weights,
                                           se=bool(config.model.backbone.get("se_reduction", 0)))
    return variables


def compile_run(config: ml_collections.ConfigDict, clip_set: ClipSet, workdir: str | None = None) -> Compiled:
    """The model, initial variables, jitted steps and (with a frozen prefix) the feature cache of a run."""
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.train.batch_size, mesh)
    sharding.check_batch_size(config.train.eval_batch_size, mesh)
    freeze_until = config.train.freeze_until or None
    model = create_model(config.model, clip_set.num_classes, frozen_until=freeze_until)
    variables = initial_variables(config, model, clip_set)
    compiled = Compiled(model=model, variables=variables, mesh=mesh,
                        train_step=sharding.jit_train_step(steps.train_step, mesh),
                        eval_step=sharding.jit_eval_step(steps.eval_step, mesh), inputs=clip_set)
    if freeze_until is None:
        return compiled
    compiled.frozen = optim.frozen_mask(variables["params"], freeze_until, model.backbone.endpoint_names)
    compiled.frozen_prefix = {"freeze_until": freeze_until, "cached": bool(config.train.cache_prefix)}
    if config.train.cache_prefix:
        started = time.perf_counter()
        # A disk cache is one set of files in the workdir: process 0 writes it, the others then reuse it.
        with distributed.process_zero_first(f"prefix cache {freeze_until}"):
            compiled.cache = prefix_cache.build_prefix_cache(
                model.backbone, {k: v["backbone"] for k, v in variables.items()}, clip_set, freeze_until,
                batch_size=config.train.cache_batch_frames,
                variants=config.train.cache_variants,
                augmentation=pipeline.Augmentation(config.data.flip_prob, config.data.max_rotation),
                seed=config.seed, dtype=np.dtype(config.train.cache_dtype),
                max_memory_bytes=int(config.train.cache_memory_gb * 2**30),
                directory=os.path.join(workdir, f"prefix_cache_{freeze_until}") if workdir else None,
                progress=tqdm)
        compiled.model = create_model(config.model, clip_set.num_classes, frozen_until=freeze_until,
                                      input_endpoint=freeze_until)
        compiled.inputs = compiled.cache.clip_set
        compiled.frozen_prefix.update(compiled.cache.describe(), build_seconds=round(time.perf_counter() - started, 2))
    return compiled


@dataclasses.dataclass
class Training:
    """A fold's training set-up: its initial state, batches per epoch and a record of its samples."""

    state: Any
    batches: Callable[[int], Any]
    steps_per_epoch: int
    record: dict[str, Any]


def prepare_training(config: ml_collections.ConfigDict, clip_set: ClipSet, clip_indices: np.ndarray, seed: int,
                     compiled: Compiled) -> Training:
    """Samples, class weights, batches and the replicated initial state for training on ``clip_indices``."""
    samples, record = training_samples(config, clip_set, clip_indices, seed)
    window = config.data.window if config.model.kind == "clip" else None
    inputs, cache = compiled.inputs, compiled.cache
    augmentation = None if cache else pipeline.Augmentation(config.data.flip_prob, config.data.max_rotation)
    class_weights = None
    if config.train.class_weights:
        counts = augment.per_class_counts(pipeline.sample_labels(clip_set, samples), clip_set.num_classes)
        class_weights = losses.inverse_frequency_weights(counts)
        record["class_weights"] = dict(zip(clip_set.class_names, np.round(class_weights, 4).tolist()))

    def batches(epoch: int):
        return pipeline.train_batches(inputs, samples, batch_size=config.train.batch_size, seed=seed,
                                      epoch=epoch, window_size=window, augmentation=augmentation,
                                      class_weights=class_weights, num_threads=config.data.num_threads,
                                      variants=cache.variants if cache else None)

    steps_per_epoch = len(samples) // config.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"only {len(samples)} training samples for --config.train.batch_size="
                        f"{config.train.batch_size}: lower the batch size (or raise data.balance_per_class)")
    state = create_train_state(compiled.model, compiled.variables,
                               compiled.optimizer(config.train, steps_per_epoch), jax.random.key(seed))
    return Training(state=sharding.replicate(state, compiled.mesh), batches=batches,
                    steps_per_epoch=steps_per_epoch, record=record)


def run_stamp(config: ml_collections.ConfigDict, clip_set: ClipSet) -> dict[str, Any]:
    """What every fold's results depend on: the configuration and a digest of the clips as loaded."""
    return {"config": workdir_lib.results_config(config),
            "data": {"name": clip_set.name, "clips": len(clip_set), "digest": stamps.clip_set_digest(clip_set)}}


def fold_stamp(stamp: dict[str, Any], clip_set: ClipSet, fold: protocols.Fold, freeze_until: str) -> dict[str, Any]:
    """``run_stamp`` plus the fold: its name, the clips of each side (digests) and its frozen prefix."""
    sides = {side: stamps.digest_value(clip_set.clip_ids[getattr(fold, side)].tolist()) for side in protocols.SIDES}
    return {**stamp, "fold": {"name": fold.name, "freeze_until": freeze_until, **sides}}


def checked_fold_dir(fold_dir: str, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """Checks what an earlier run left in ``fold_dir`` against ``stamp``; returns its finished result, if any.

    Raises:
      UserError: when the fold's checkpoints or result were computed with
        another configuration, other data or other fold members (naming what
        differs), or carry no stamp.
    """
    stamp_file, result_file = os.path.join(fold_dir, STAMP_FILE), os.path.join(fold_dir, RESULT_FILE)
    if not os.path.isdir(fold_dir) or not os.listdir(fold_dir):
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


def training_side(config: ml_collections.ConfigDict, fold: protocols.Fold) -> tuple[np.ndarray, np.ndarray]:
    """The clips a fold trains on and validates on.

    Validation subjects serve ``train.select`` (choosing the epoch on them) and
    the validation learning curves. With ``train.select=''`` the last epoch is
    kept, so nothing is chosen on them and they join the training side.
    """
    if config.train.select:
        return fold.train, fold.val
    return np.union1d(fold.train, fold.val), fold.val[:0]


def run_fold(config: ml_collections.ConfigDict, clip_set: ClipSet, fold: protocols.Fold, fold_index: int,
             compiled: Compiled, workdir: str, stamp: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains and tests one fold, or returns its finished result from an earlier run with the same stamp."""
    fold_dir = os.path.join(workdir, fold.name)
    stamp = fold_stamp(stamp or run_stamp(config, clip_set), clip_set, fold, config.train.freeze_until)
    finished = checked_fold_dir(fold_dir, stamp)
    # Every process checks the fold folder before process 0 writes to it, so that all make one decision.
    distributed.barrier(f"checked {fold_dir}")
    if finished is not None:
        return finished
    if jax.process_index() == 0:
        files.atomic_write_json(os.path.join(fold_dir, STAMP_FILE), stamp)
    seed = int(np.random.SeedSequence([config.seed, fold_index]).generate_state(1)[0])
    train_clips, val_clips = training_side(config, fold)
    training = prepare_training(config, clip_set, train_clips, seed, compiled)
    inputs = compiled.inputs
    mesh, eval_step = compiled.mesh, compiled.eval_step
    max_length = pipeline.eval_length(clip_set)

    def validate(state) -> dict[str, float]:
        prediction = predict_clips(eval_step, state, config, inputs, val_clips, mesh, max_length)
        scores = metrics.classification_metrics(prediction["labels"], prediction["predictions"],
                                                clip_set.num_classes)
        return {"loss": prediction["loss"], "accuracy": scores["accuracy"], "uf1": scores["uf1"],
                "uar": scores["uar"]}

    fitted = fit(
        training.state,
        train_step=compiled.train_step,
        train_batches=training.batches,
        epochs=config.train.epochs,
        mesh=mesh,
        evaluate=validate if len(val_clips) else None,
        select=config.train.select or None,
        checkpoint_dir=os.path.join(fold_dir, "checkpoints"),
        progress=tqdm,
        description=fold.name,
    )
    test = predict_clips(eval_step, fitted.state, config, inputs, fold.test, mesh, max_length)
    result = {
        "name": fold.name,
        "stamp": stamps.digest_value(stamp),
        "train_subjects": sorted(set(clip_set.subjects[train_clips].tolist())),
        "val_subjects": sorted(set(clip_set.subjects[val_clips].tolist())),
        "test_subjects": sorted(set(clip_set.subjects[fold.test].tolist())),
        "training_samples": training.record,
        "steps_per_epoch": training.steps_per_epoch,
        "history": fitted.history,
        "selected_epoch": fitted.selected_epoch,
        "resumed_from_epoch": fitted.resumed_from,
        "resume_notes": fitted.notes,
        "frozen_prefix": compiled.frozen_prefix,
        "test": test,
    }
    if jax.process_index() == 0:
        files.atomic_write_json(os.path.join(fold_dir, RESULT_FILE), result)
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


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the whole cross-validation and writes the reports; returns the summary.

    Folds finished by an earlier run with the same stamp are reused, an
    unfinished one resumes from its checkpoints, and anything computed from
    another configuration or other data is refused (``checked_fold_dir``).
    The caller owns the workdir (``experiments.workdir.claim``: lock + config check).
    """
    started = time.time()
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    clip_set, dataset_dirs = load_data(config)
    record = provenance.collect(config, dataset_dirs)
    folds = make_folds(config, clip_set)
    stamp = run_stamp(config, clip_set)
    record["data_digest"] = stamp["data"]["digest"]
    compiled_by_prefix: dict[str, Compiled] = {}
    results = []
    for index, (fold, fold_config) in enumerate(zip(folds, fold_configs(config, clip_set, folds))):
        prefix = fold_config.train.freeze_until
        if prefix not in compiled_by_prefix:
            compiled_by_prefix[prefix] = compile_run(fold_config, clip_set, workdir)
        results.append(run_fold(fold_config, clip_set, fold, index, compiled_by_prefix[prefix], workdir, stamp))
    coverage = check_coverage(config, clip_set, folds, results)
    record["wall_seconds"] = round(time.time() - started, 1)
    summary = report.summarize(config, clip_set, results, provenance=record)
    summary["coverage"] = coverage
    report.write(workdir, summary, results, clip_set.class_names)
    return summary
