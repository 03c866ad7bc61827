"""Subject-wise cross-validation of a frame or clip classifier: the engine of seed 001's experiments.

For each fold: training samples (sliding windows of N frames, or single frames
for Exp-I) from the training subjects, optionally resampled to a target count
per class (seed 001 Table 1); a model trained for a fixed schedule with an
orbax checkpoint per epoch (an interrupted run resumes); validation on held-out
*training* subjects only; then one prediction per test clip. Metrics are pooled
over folds. A finished fold's ``result.json`` is reused when the run restarts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from datasets.build import ensure_all_built
from experiments import report
from merjax.data import augment, pipeline, protocols
from merjax.data.pipeline import ClipSet
from merjax.models import create_model
from merjax.train import evaluate, losses, metrics, optim, prefix_cache, sharding, steps
from merjax.train.loop import fit
from merjax.train.state import create_train_state, init_variables
from merjax.weights.backbone import with_vggface2_backbone


PROTOCOLS = ("kfold_by_subject", "loso", "composite_loso", "cross_database")


def load_clip_set(config: ml_collections.ConfigDict) -> ClipSet:
    """Builds ``data.name`` where needed (``A+B``: each) and loads it resized to ``data.image_size``."""
    directories = ensure_all_built(config.data.name, config.data.data_dir, config.data.manual_dir or None,
                                   config.data.faces.to_dict())
    clip_sets = [pipeline.load_clips(directory, config.data.image_size, progress=tqdm) for directory in directories]
    return clip_sets[0] if len(clip_sets) == 1 else pipeline.concat_clip_sets(clip_sets)


def make_folds(config: ml_collections.ConfigDict, clip_set: ClipSet) -> list[protocols.Fold]:
    kind = config.protocol.kind
    common = dict(val_subjects=config.protocol.val_subjects, num_classes=clip_set.num_classes)
    if kind == "kfold_by_subject":
        subjects = protocols.subject_keys(clip_set.datasets, clip_set.subjects)
        return protocols.kfold_by_subject(subjects, clip_set.labels, config.protocol.k, config.seed, **common)
    if kind == "loso":
        return protocols.loso(clip_set.subjects, clip_set.labels, seed=config.seed, **common)
    if kind == "composite_loso":
        return protocols.composite_loso(clip_set.datasets, clip_set.subjects, clip_set.labels, seed=config.seed,
                                        val_subjects=config.protocol.val_subjects)
    if kind == "cross_database":
        return [protocols.cross_database(clip_set.datasets, clip_set.subjects, clip_set.labels,
                                         train=config.protocol.train, test=config.protocol.test, seed=config.seed,
                                         **common)]
    raise ValueError(f"unknown protocol {kind!r}; choose one of {PROTOCOLS}")


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
        compiled.cache = prefix_cache.build_prefix_cache(
            model.backbone, {k: v["backbone"] for k, v in variables.items()}, clip_set, freeze_until,
            batch_size=config.train.cache_batch_frames,
            variants=config.train.cache_variants,
            augmentation=pipeline.Augmentation(config.data.flip_prob, config.data.max_rotation),
            seed=config.seed, dtype=np.dtype(config.train.cache_dtype),
            max_memory_bytes=int(config.train.cache_memory_gb * 2**30),
            directory=os.path.join(workdir, "prefix_cache") if workdir else None, progress=tqdm)
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
    state = create_train_state(compiled.model, compiled.variables,
                               compiled.optimizer(config.train, steps_per_epoch), jax.random.key(seed))
    return Training(state=sharding.replicate(state, compiled.mesh), batches=batches,
                    steps_per_epoch=steps_per_epoch, record=record)


def run_fold(config: ml_collections.ConfigDict, clip_set: ClipSet, fold: protocols.Fold, fold_index: int,
             compiled: Compiled, workdir: str) -> dict[str, Any]:
    fold_dir = os.path.join(workdir, fold.name)
    result_file = os.path.join(fold_dir, "result.json")
    if os.path.exists(result_file):
        with open(result_file) as f:
            return json.load(f)
    os.makedirs(fold_dir, exist_ok=True)
    seed = int(np.random.SeedSequence([config.seed, fold_index]).generate_state(1)[0])
    training = prepare_training(config, clip_set, fold.train, seed, compiled)
    inputs = compiled.inputs
    mesh, eval_step = compiled.mesh, compiled.eval_step
    max_length = pipeline.eval_length(clip_set)

    def validate(state) -> dict[str, float]:
        prediction = predict_clips(eval_step, state, config, inputs, fold.val, mesh, max_length)
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
        evaluate=validate if len(fold.val) else None,
        select=config.train.select or None,
        checkpoint_dir=os.path.join(fold_dir, "checkpoints"),
        progress=tqdm,
        description=fold.name,
    )
    test = predict_clips(eval_step, fitted.state, config, inputs, fold.test, mesh, max_length)
    result = {
        "name": fold.name,
        "train_subjects": sorted(set(clip_set.subjects[fold.train].tolist())),
        "val_subjects": sorted(set(clip_set.subjects[fold.val].tolist())),
        "test_subjects": sorted(set(clip_set.subjects[fold.test].tolist())),
        "training_samples": training.record,
        "steps_per_epoch": training.steps_per_epoch,
        "history": fitted.history,
        "selected_epoch": fitted.selected_epoch,
        "resumed_from_epoch": fitted.resumed_from,
        "frozen_prefix": compiled.frozen_prefix,
        "test": test,
    }
    with open(result_file, "w") as f:
        json.dump(result, f, indent=1)
    return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the whole cross-validation and writes the reports; returns the summary."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    clip_set = load_clip_set(config)
    folds = make_folds(config, clip_set)
    compiled = compile_run(config, clip_set, workdir)
    results = [run_fold(config, clip_set, fold, i, compiled, workdir) for i, fold in enumerate(folds)]
    summary = report.summarize(config, clip_set, results)
    report.write(workdir, summary, results, clip_set.class_names)
    return summary
