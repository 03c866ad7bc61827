"""The config every experiment starts from: data, protocol, targets, sampler, model, loss, training, stages.

Method-agnostic: each method's file (``seed001.py`` for seed 001's three
experiments, later ones for seeds 002–004) sets its model, sampler and
presets on top. A preset is data — a mapping of dotted keys to values
(``apply_presets``) — so that what a preset changes reads at a glance and is
recorded with the run.

A run is a list of **stages** (``config.stages``, empty = one stage from the
keys below). Each entry maps a stage name to the keys it overrides (its
sampler, model, loss, training, ``init`` from an earlier stage, ``scope``), in
run order; see ``experiments/stages.py``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections

from merjax.errors import UserError

DEFAULT_DATA_DIR = os.environ.get("MERJAX_DATA_DIR", os.path.expanduser("~/merjax_data"))


def base() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = ""
    config.preset = ""     # set by apply_presets, recorded in the run's provenance (choose it with FILE:PRESET)
    config.seed = 0
    # Non-empty, e.g. --config.seeds="(0,1,2)": the whole run once per seed, each in WORKDIR/seed_K with
    # seed=K, and summary.json/summary.md over the seeds (experiments/seeds.py); config.seed is then unused.
    config.seeds = ()

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic_me/smic_like"   # TFDS NAME/CONFIG, built on first use; A+B loads both
    config.data.data_dir = DEFAULT_DATA_DIR
    config.data.manual_dir = ""                    # where a licensed database lies (real data); searched below
    # Face crop + landmarks made once when a real database is built (datasets.core.builder.FaceOptions).
    config.data.faces = ml_collections.ConfigDict()
    config.data.faces.crop_size = 224              # stored crop; data.image_size resizes it after loading
    config.data.faces.margin = 0.1                 # crop = first frame's landmark box grown 10 % per side
    config.data.faces.every_frame_landmarks = False  # seed 002: first frame only, box fixed for the clip
    config.data.faces.detector = "dlib"            # or 'fan' with data.faces.detector_weights (local file)
    config.data.faces.detector_weights = ""
    config.data.faces.detector_upsample = 1        # 0: ~4x faster detection, faces of >= ~80 px only
    config.data.faces.max_face_tries = 5
    # Seed 001: the whole frame letterboxed to crop_size instead of the face crop (landmarks still stored);
    # such copies are kept under data_dir/full_frame.
    config.data.faces.full_frame = False
    config.data.image_size = 64                    # clip operation 1: every clip resized to this square side
    # Further per-clip operations, "name(key=value, ...)" (merjax.data.clip_ops), applied once at load and
    # cached under data_dir with a stamp of what they depend on, e.g. "crop_regions(template='seed002')".
    config.data.clip_ops = ()
    config.data.num_threads = 2                    # grain loader threads

    config.protocol = ml_collections.ConfigDict()
    # kfold_by_subject, loso, composite_loso (MEGC 2019), cross_database; kfold_by_sample is NOT
    # subject-independent (a subject's clips on both sides; seed 003's protocol) and is labelled so.
    config.protocol.kind = "kfold_by_subject"
    config.protocol.k = 5
    config.protocol.train = ""                     # cross_database: the database trained on (e.g. samm) ...
    config.protocol.test = ""                      # ... and the one tested on (e.g. casme2)
    config.protocol.val_subjects = 1               # inner validation subjects, from the training side
    config.protocol.val_fraction = 0.1             # kfold_by_sample: validation clips per class, from training

    config.targets = ("label",)                    # what the model predicts (merjax.data.targets)

    config.sampler = ml_collections.ConfigDict()
    config.sampler.name = "sliding_windows"        # frames | sliding_windows | random_window | whole_clip | clip_image
    config.sampler.streams = ("frames",)           # the clip streams the model reads
    config.sampler.window = 13                     # N consecutive frames per sample (window samplers)
    config.sampler.train_stride = 1                # sliding-window stride over training clips
    config.sampler.eval_stride = 2                 # windows of a test clip; its prediction averages them
    config.sampler.pad_short = True                # clips shorter than N: one padded, masked window (counted)
    config.sampler.balance_per_class = 0           # >0: resample training samples to this many per class

    config.augment = ml_collections.ConfigDict()
    config.augment.flip_prob = 0.5                 # one flip and one angle per training sample
    config.augment.max_rotation = 10.0             # degrees

    config.model = ml_collections.ConfigDict()
    config.model.name = "clip_classifier"          # merjax.models.registry.MODELS
    config.model.dtype = "float32"
    config.model.weights = ""                      # pretrained backbone weights, imported by the backbone
    config.model.backbone = ml_collections.ConfigDict()
    config.model.backbone.name = "resnet"          # merjax.models.registry.BACKBONES

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "cross_entropy"             # or focal (Lin et al.)
    config.loss.gamma = 2.0                        # focal only
    # Per-sample weights from the inverse class frequency of the fold's training samples (focal: its α).
    config.loss.class_weights = True
    config.loss.target_weights = ml_collections.ConfigDict()   # target -> weight in the total loss (default 1)

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 10
    config.train.batch_size = 8
    config.train.eval_batch_size = 8
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-3
    config.train.momentum = 0.9
    config.train.weight_decay = 0.0
    config.train.schedule = "cosine"
    config.train.warmup_epochs = 0.0
    config.train.step_epochs = ()
    config.train.step_factor = 0.1
    config.train.grad_clip = 0.0            # global-norm clipping, 0 = off
    config.train.select = ""                # '' = last epoch; 'uf1'/'uar'/'accuracy' = best on validation
    # The backbone endpoint up to which layers are frozen ('' trains everything); seed 001 retrains from l_s.
    config.train.freeze_until = ""
    # Or each fold's own l_s: the gradcam_scores.json of experiments.gradcam_layers, chosen on that fold's
    # training subjects only (overrides freeze_until fold by fold).
    config.train.freeze_from = ""
    config.train.cache_prefix = True        # compute the frozen prefix once per frame, train the suffix only
    config.train.cache_variants = 4         # cached versions per clip: the clip + 3 fixed random flips/rotations
    config.train.cache_dtype = "float16"
    config.train.cache_memory_gb = 4.0      # larger caches go to memory-mapped files in the workdir
    config.train.cache_batch_frames = 64    # frames per prefix call while building the cache
    # Train the protocol's folds as one vectorised program (jax.vmap over stacked fold states): LOSO with
    # small models. Same predictions as one fold after another.
    config.train.vectorize_folds = False

    # A stage starts from the initial variables, or from the parameters an earlier stage of the same fold
    # (scope 'fold') or run (scope 'run') ended with: subtrees matching include (all if empty) and not exclude
    # are copied (e.g. include=('backbone',) keeps a fresh head: a head swap).
    config.init = ml_collections.ConfigDict()
    config.init.from_stage = ""
    config.init.include = ()
    config.init.exclude = ()
    config.scope = "fold"                   # 'fold': trained per fold; 'run': once per run on another dataset
    config.stages = ml_collections.ConfigDict()   # stage name -> the keys it overrides
    config.stage_order = ()                       # the stages' names in run order
    return config


Preset = Mapping[str, Any]


def apply_presets(config: ml_collections.ConfigDict, presets: Mapping[str, Preset],
                  names: str) -> ml_collections.ConfigDict:
    """Applies the presets ``names`` ('default', or several joined by '+', e.g. 'default+exp1_encoder') in order.

    A preset maps dotted keys to values; a ``stages`` value (a mapping of stage
    name to overrides) replaces the config's stages, and ``stage_order`` their order.

    Raises:
      UserError: naming an unknown preset (and the choices) or a key no config has.
    """
    for name in names.split("+"):
        if name not in presets:
            raise UserError(f"unknown preset {name!r} (FILE:PRESET); choose from {tuple(presets)}, joined by '+'")
        for key, value in presets[name].items():
            set_key(config, key, value, where=f"preset {name!r}")
    config.preset = names
    return config


def set_key(config: ml_collections.ConfigDict, key: str, value: Any, *, where: str) -> None:
    """``config.<key> = value`` for a dotted key that exists (stages: a new ConfigDict of overrides)."""
    *parents, last = key.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise UserError(f"{where}: no config key {key!r}")
        node = node[part]
    if key == "stages":
        node[last] = ml_collections.ConfigDict(dict(value))
        return
    if last not in node:
        raise UserError(f"{where}: no config key {key!r}")
    with node.ignore_type():
        node[last] = value
