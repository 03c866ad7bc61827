"""Checks every value a user can set in an experiment's config, before anything runs: ``validate(config)``.

A bad value found late costs a dataset build and a compile, then fails deep in
JAX, OpenCV or a division, or worse, runs: ``train.epochs=0`` "trained" for no
epoch and reported a normal-looking summary. ``validate`` raises ``UserError``
for the first bad value, naming ``--config.KEY``, the value and what is
allowed. ``experiments/cli.py`` calls it before claiming the workdir.

Checked: ``seed``/``seeds``; ``data`` (name: a known dataset and config per
``+`` part; data_dir; manual_dir and weight files exist; image_size, clip
operations, threads; the face options); ``protocol`` (kind, k, val_subjects,
train/test for cross_database only); ``targets``, ``sampler`` (name, streams,
window, strides, balancing) and ``augment``; ``model`` (a registered model and
backbone, dtype, seed 001's backbone, temporal and head sizes and dropouts,
weights); ``loss`` (name, gamma, target weights);
``train`` (epochs, batch sizes >= 1 and divisible by the device count,
optimizer, learning rate, momentum, weight decay, schedule with warm-up and
step epochs inside the run, clipping, select with validation subjects,
freeze_until an endpoint of the backbone, freeze_from a file, the prefix cache);
every stage of ``stages`` the same way (``experiments.stages.resolve``: existing
keys, earlier init stages); and a ``gradcam`` section by ``experiments.gradcam_layers.check_settings``.
Data-dependent limits (more folds than subjects, a class missing from a fold)
are checked when the data is loaded (``experiments.cv.make_folds``).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, NoReturn, Sequence

import jax
import ml_collections

from datasets import build
from datasets.core.builder import FaceOptions
from experiments.configs import pretrain
from merjax.errors import UserError
from merjax.data import clip_ops, samplers, targets
from merjax.models import recurrent, registry
from merjax.train import losses, optim

SELECT_METRICS = ("uf1", "uar", "accuracy")   # validation metrics an epoch can be chosen on (higher is better)
CACHE_DTYPES = ("float16", "float32")
MIN_IMAGE_SIZE = 8       # pixels; the ResNet halves the input five times (as FaceOptions.crop_size's minimum)
MAX_ROTATION = 180.0     # degrees


def _fail(key: str, value: Any, requirement: str) -> NoReturn:
    raise UserError(f"--config.{key}={value!r}: {requirement}")


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value[part]
    return value


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _integer(config: ml_collections.ConfigDict, key: str, minimum: int, what: str) -> int:
    value = _get(config, key)
    if not _is_integer(value) or value < minimum:
        _fail(key, value, f"must be an integer >= {minimum} ({what})")
    return int(value)


def _number(config: ml_collections.ConfigDict, key: str, low: float, high: float, what: str, *,
            low_open: bool = False, high_open: bool = False) -> float:
    """A real number in the interval low..high (each end open or closed)."""
    value = _get(config, key)
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or value < low or value > high or (low_open and value == low) or (high_open and value == high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        _fail(key, value, f"must be a number in {interval} ({what})")
    return float(value)


def _choice(config: ml_collections.ConfigDict, key: str, allowed: Sequence[Any]) -> Any:
    value = _get(config, key)
    if value not in allowed:
        _fail(key, value, f"must be one of {tuple(allowed)}")
    return value


def _boolean(config: ml_collections.ConfigDict, key: str) -> None:
    value = _get(config, key)
    if not isinstance(value, bool):
        _fail(key, value, "must be True or False")


def _existing_file(config: ml_collections.ConfigDict, key: str, what: str) -> None:
    value = _get(config, key)
    if value and not os.path.isfile(os.path.expanduser(str(value))):
        _fail(key, value, f"no such file ({what}; '' for none)")


def _sizes(config: ml_collections.ConfigDict, key: str, what: str, *, allow_empty: bool) -> tuple[int, ...]:
    value = _get(config, key)
    if (isinstance(value, str) or not isinstance(value, Sequence) or (not value and not allow_empty)
            or not all(_is_integer(size) and size >= 1 for size in value)):
        _fail(key, value, f"must be a {'' if allow_empty else 'non-empty '}tuple of integers >= 1 ({what})")
    return tuple(int(size) for size in value)


def _check_run(config: ml_collections.ConfigDict) -> None:
    _integer(config, "seed", 0, "the run's random seed")
    if config.get("seeds"):
        from experiments import seeds   # imported on use: only runs over several seeds need it

        try:
            seeds.checked_seeds(config.seeds)
        except UserError as error:
            raise UserError(f"--config.seeds={tuple(config.seeds)!r}: {error}") from None


def _check_data(config: ml_collections.ConfigDict) -> None:
    name = config.data.name
    if not isinstance(name, str) or not name:
        _fail("data.name", name, "must name a dataset, NAME/CONFIG or A+B (e.g. synthetic_me/smic_like)")
    for part in name.split("+"):
        try:
            build.resolve_name(part)
        except UserError as error:
            _fail("data.name", name, str(error))
    if not config.data.data_dir:
        _fail("data.data_dir", config.data.data_dir, "must be the folder prepared datasets are kept in")
    manual_dir = config.data.manual_dir
    if manual_dir and not os.path.isdir(os.path.expanduser(manual_dir)):
        _fail("data.manual_dir", manual_dir, "no such folder (the folder holding your database or clips)")
    _choice(config, "data.faces.detector", build.DETECTORS)
    _existing_file(config, "data.faces.detector_weights", "the landmark model")
    try:
        FaceOptions(**config.data.faces.to_dict())
    except (TypeError, ValueError) as error:
        raise UserError(f"--config.data.faces: {error}") from None
    _integer(config, "data.image_size", MIN_IMAGE_SIZE, "the side in pixels frames are resized to")
    clip_ops.parse_clip_ops(tuple(config.data.clip_ops))
    _integer(config, "data.num_threads", 0, "loader threads")


def _check_sampler(config: ml_collections.ConfigDict) -> None:
    unknown = [name for name in config.targets if name not in targets.TARGETS]
    if isinstance(config.targets, str) or not config.targets or unknown:
        _fail("targets", config.targets, f"must be a non-empty tuple of targets from {sorted(targets.TARGETS)}")
    _choice(config, "sampler.name", tuple(samplers.SAMPLERS))
    streams = config.sampler.streams
    if isinstance(streams, str) or not streams or not all(isinstance(stream, str) for stream in streams):
        _fail("sampler.streams", streams, "must be a non-empty tuple of stream names, e.g. ('frames',)")
    _integer(config, "sampler.window", 1, "frames per sample of a window sampler")
    _integer(config, "sampler.train_stride", 1, "frames between training windows")
    _integer(config, "sampler.eval_stride", 1, "frames between a test clip's windows")
    _boolean(config, "sampler.pad_short")
    _integer(config, "sampler.balance_per_class", 0, "training samples per class; 0 keeps the counts")
    _number(config, "augment.flip_prob", 0.0, 1.0, "probability of a horizontal flip")
    _number(config, "augment.max_rotation", 0.0, MAX_ROTATION, "largest random rotation, degrees")


def _check_loss(config: ml_collections.ConfigDict) -> None:
    _choice(config, "loss.name", tuple(losses.LOSSES))
    _number(config, "loss.gamma", 0.0, math.inf, "the focal loss's focusing exponent", high_open=True)
    _boolean(config, "loss.class_weights")
    for name, weight in config.loss.target_weights.items():
        if name not in config.targets:
            _fail(f"loss.target_weights.{name}", weight, f"names no target of --config.targets={tuple(config.targets)}")
        _number(config, f"loss.target_weights.{name}", 0.0, math.inf, "the target's weight in the loss",
                high_open=True)


def _check_protocol(config: ml_collections.ConfigDict) -> None:
    from experiments import cv   # imported on use: cv imports this module's callers' heavy dependencies

    kind = _choice(config, "protocol.kind", cv.PROTOCOLS)
    if kind in ("kfold_by_subject", "kfold_by_sample"):
        _integer(config, "protocol.k", 2, "folds")
    if kind == "kfold_by_sample" and config.train.select:
        _number(config, "protocol.val_fraction", 0.0, 1.0, "validation clips per class, from the training side",
                low_open=True, high_open=True)
    val_subjects = _integer(config, "protocol.val_subjects", 0, "validation subjects carved from each fold's "
                                                                "training side")
    if config.train.select and val_subjects == 0:
        _fail("protocol.val_subjects", 0, f"must be >= 1 with --config.train.select={config.train.select!r}, which "
                                          f"chooses the epoch on validation subjects (or set --config.train.select='')")
    train, test = config.protocol.train, config.protocol.test
    if kind == "cross_database":
        for key, value in (("protocol.train", train), ("protocol.test", test)):
            if not value:
                _fail(key, value, "must name a database for --config.protocol.kind=cross_database (e.g. samm, casme2)")
        if train == test:
            _fail("protocol.test", test, "must differ from --config.protocol.train (cross-database)")
    else:
        for key, value in (("protocol.train", train), ("protocol.test", test)):
            if value:
                _fail(key, value, f"is used by --config.protocol.kind=cross_database only, not {kind!r}; leave it ''")


def _check_model(config: ml_collections.ConfigDict) -> None:
    _choice(config, "model.name", tuple(registry.MODELS))
    _choice(config, "model.backbone.name", tuple(registry.BACKBONES))
    _choice(config, "model.dtype", tuple(registry.DTYPES))
    if pretrain.is_spec(config.model.weights):
        pretrain.spec_preset(config.model.weights)   # pretrained on first use (experiments.pretrain.ensure_weights)
    else:
        _existing_file(config, "model.weights", "pretrained backbone weights")
    # The keys of seed 001's classifiers (ResNet backbone, LSTM/BiLSTM, fc head), where the model has them.
    if "stage_sizes" in config.model.backbone:
        _sizes(config, "model.backbone.stage_sizes", "bottleneck blocks per ResNet stage", allow_empty=False)
    if "width" in config.model.backbone:
        _integer(config, "model.backbone.width", 1, "channels of the first stage")
    if "se_reduction" in config.model.backbone:
        _integer(config, "model.backbone.se_reduction", 0, "squeeze-excitation reduction; 0 = none")
    if "temporal" in config.model:
        _choice(config, "model.temporal.kind", tuple(recurrent.TEMPORAL_MODELS))
        _integer(config, "model.temporal.hidden", 1, "LSTM units")
        _integer(config, "model.temporal.layers", 1, "LSTM layers")
        _number(config, "model.temporal.dropout", 0.0, 1.0, "dropout between LSTM layers", high_open=True)
    if "head" in config.model:
        _sizes(config, "model.head.hidden", "fc widths before the logits", allow_empty=True)
        _number(config, "model.head.dropout", 0.0, 1.0, "dropout in the head", high_open=True)


def _check_train(config: ml_collections.ConfigDict) -> None:
    epochs = _integer(config, "train.epochs", 1, "training epochs")
    devices = jax.device_count()
    for key in ("train.batch_size", "train.eval_batch_size"):
        size = _integer(config, key, 1, "samples per step over all devices")
        if size % devices:
            _fail(key, size, f"must be a multiple of the {devices} devices the batch is split over")
    _choice(config, "train.optimizer", optim.OPTIMIZERS)
    _number(config, "train.learning_rate", 0.0, math.inf, "the peak learning rate", low_open=True, high_open=True)
    _number(config, "train.momentum", 0.0, 1.0, "SGD momentum", high_open=True)
    _number(config, "train.weight_decay", 0.0, math.inf, "weight decay", high_open=True)
    _choice(config, "train.schedule", optim.SCHEDULES)
    _number(config, "train.warmup_epochs", 0.0, epochs, "epochs of linear warm-up, fewer than train.epochs",
            high_open=True)
    step_epochs = config.train.step_epochs
    if isinstance(step_epochs, str) or not isinstance(step_epochs, Sequence) or not all(
            isinstance(epoch, numbers.Real) and 0 < epoch < epochs for epoch in step_epochs):
        _fail("train.step_epochs", step_epochs, f"must be a tuple of epochs inside the run (0 < epoch < {epochs})")
    if config.train.schedule == "step" and not step_epochs:
        _fail("train.step_epochs", step_epochs, "must list the epochs to decay at for --config.train.schedule=step")
    _number(config, "train.step_factor", 0.0, math.inf, "learning-rate factor at each step epoch", low_open=True,
            high_open=True)
    _number(config, "train.grad_clip", 0.0, math.inf, "global-norm clipping; 0 = off", high_open=True)
    _choice(config, "train.select", ("", *SELECT_METRICS))
    _choice(config, "train.freeze_until", ("", *registry.backbone_endpoints(config.model)))
    if config.train.get("freeze_from"):
        from experiments import layer_choice   # imported on use: only runs with a per-fold layer choice need it

        for seed in config.get("seeds") or (config.seed,):
            path = layer_choice.choice_file(config.train.freeze_from, seed)
            if not os.path.isfile(os.path.expanduser(path)):
                _fail("train.freeze_from", config.train.freeze_from,
                      f"no such file {path} (the gradcam_scores.json of experiments.gradcam_layers for seed {seed})")
    _boolean(config, "train.cache_prefix")
    _integer(config, "train.cache_variants", 1, "cached versions of each clip")
    _choice(config, "train.cache_dtype", CACHE_DTYPES)
    _number(config, "train.cache_memory_gb", 0.0, math.inf, "largest in-memory cache, GiB", high_open=True)
    _integer(config, "train.cache_batch_frames", 1, "frames per call while building the cache")
    _boolean(config, "train.vectorize_folds")


def _check_stage(config: ml_collections.ConfigDict) -> None:
    """The sections a stage may override."""
    _check_sampler(config)
    _check_model(config)
    _check_loss(config)
    _check_train(config)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ``UserError`` naming the first bad ``--config.KEY``, its value and what is allowed.

    The model section is checked before the training one (``train.freeze_until``
    depends on ``model.backbone.stage_sizes``). An experiment's own section
    (``gradcam``) is checked by that experiment's ``check_settings``.
    """
    from experiments import stages   # imported on use: stages imports the engine's dependencies

    _check_run(config)
    _check_data(config)
    _check_protocol(config)
    _check_stage(config)
    for stage in stages.resolve(config) if config.stages else ():
        try:
            _check_stage(stage.config)
            _check_data(stage.config)
        except UserError as error:
            raise UserError(str(error).replace("--config.", f"--config.stages.{stage.name}.", 1)) from None
    if "gradcam" in config:
        from experiments import gradcam_layers   # imported on use: only that experiment has the section

        gradcam_layers.check_settings(config)
