"""The shared config of seed 001's experiments (SMIC, subject-wise cross-validation).

Each experiment's config file starts from ``base()`` and picks a preset:
``default`` runs the whole cross-validation on the synthetic SMIC-like dataset
in minutes on a CPU; ``paper`` holds the seed's settings for GPUs and real
SMIC-HS; ``smoke`` is a seconds-long run for tests.
"""

from __future__ import annotations

import os

import ml_collections

DEFAULT_DATA_DIR = os.environ.get("MERJAX_DATA_DIR", os.path.expanduser("~/merjax_data"))
PRESETS = ("default", "paper", "smoke")


def base() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = ""
    config.preset = ""     # set by apply_preset, recorded in the run's provenance (choose it with FILE:PRESET)
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
    config.data.image_size = 64                    # frames are resized once, after loading
    config.data.window = 13                        # N consecutive frames per sample (seed 001: 13)
    config.data.train_stride = 1                   # sliding-window stride over training clips
    config.data.eval_stride = 2                    # windows of a test clip; its prediction averages them
    config.data.pad_short = True                   # clips shorter than N: one padded, masked window (counted)
    config.data.balance_per_class = 0              # >0: resample training samples to this many per class (Table 1)
    config.data.flip_prob = 0.5                    # augmentation (seed 001 §4.2)
    config.data.max_rotation = 10.0                # degrees
    config.data.num_threads = 2                    # grain loader threads

    config.protocol = ml_collections.ConfigDict()
    config.protocol.kind = "kfold_by_subject"      # or loso, composite_loso (MEGC 2019), cross_database
    config.protocol.k = 5                          # seed 001: 5-fold subject-wise
    config.protocol.train = ""                     # cross_database: the database trained on (e.g. samm) ...
    config.protocol.test = ""                      # ... and the one tested on (e.g. casme2)
    config.protocol.val_subjects = 1               # inner validation subjects, from the training side

    config.model = ml_collections.ConfigDict()
    config.model.kind = "clip"
    config.model.dtype = "float32"
    config.model.weights = ""                          # VGGFace2 resnet50_ft/senet50_ft .pkl or Keras .h5
    config.model.backbone = ml_collections.ConfigDict()
    config.model.backbone.stage_sizes = (3, 4, 6, 3)   # ResNet-50
    config.model.backbone.width = 64                   # 64 = ResNet-50 as published
    config.model.backbone.se_reduction = 0             # 16 = SE-ResNet-50 (senet50_ft weights)
    config.model.temporal = ml_collections.ConfigDict()
    config.model.temporal.kind = "bilstm"
    config.model.temporal.hidden = 256
    config.model.temporal.layers = 1
    config.model.temporal.dropout = 0.0
    config.model.head = ml_collections.ConfigDict()
    # Seed 001 names fc1–fc3 but gives no sizes: 512 → 128 → classes.
    config.model.head.hidden = (512, 128)
    config.model.head.dropout = 0.5

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
    config.train.class_weights = True       # inverse class frequency of the training samples
    config.train.select = ""                # '' = last epoch; 'uf1'/'uar'/'accuracy' = best on validation
    # Seed 001 retrains from l_s and freezes the layers before it: the backbone endpoint
    # just before l_s ('conv1', 'pool1', 'layer1'..'layer4', 'pooled'); '' trains everything.
    config.train.freeze_until = ""
    # Or each fold's own l_s: the gradcam_scores.json of experiments.gradcam_layers, chosen on that fold's
    # training subjects only (overrides freeze_until fold by fold).
    config.train.freeze_from = ""
    config.train.cache_prefix = True        # compute the frozen prefix once per frame, train the suffix only
    config.train.cache_variants = 4         # cached versions per clip: the clip + 3 fixed random flips/rotations
    config.train.cache_dtype = "float16"
    config.train.cache_memory_gb = 4.0      # larger caches go to memory-mapped files in the workdir
    config.train.cache_batch_frames = 64    # frames per prefix call while building the cache
    return config


def apply_preset(config: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    """Sets the data/model/train sizes of a preset shared by seed 001's experiments."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    config.preset = preset
    if preset == "default":
        # Sized for a 2-core CPU (≤ 10 minutes for the whole 5-fold run, build included):
        # the ResNet-50 topology at 1/8 width on 48² crops, 192 windows per class per epoch.
        config.data.image_size = 48
        config.model.backbone.width = 8
        config.data.balance_per_class = 192
        config.train.epochs = 6
        config.train.learning_rate = 3e-3
    elif preset == "paper":
        # Seed 001: SMIC-HS with non-micro clips as a 4th class, ResNet-50 at 224²,
        # N=13, 5-fold subject-wise CV. Needs the real database and a GPU.
        config.data.name = "smic/hs_4class"
        config.data.image_size = 224
        config.data.train_stride = 1
        config.data.eval_stride = 1
        config.data.balance_per_class = 1700   # Table 1, Aug.-II: ~1700 windows of N=13 frames per class
        config.model.backbone.width = 64
        config.train.epochs = 30
        config.train.batch_size = 32
        config.train.eval_batch_size = 16
        config.train.learning_rate = 1e-4
    elif preset == "smoke":
        config.data.name = "synthetic_me/tiny"
        config.data.image_size = 32
        config.data.window = 4
        config.data.train_stride = 2
        config.data.eval_stride = 2
        config.protocol.k = 2
        config.model.backbone.stage_sizes = (1, 1, 1, 1)
        config.model.backbone.width = 4
        config.model.temporal.hidden = 8
        config.model.head.hidden = (16, 8)
        config.train.epochs = 2
        config.train.batch_size = 4
        config.train.eval_batch_size = 4
    return config
