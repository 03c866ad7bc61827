"""The synthetic pretraining of seed 001's backbone (``python -m experiments.pretrain``): the stand-in for VGGFace2.

A frame classifier (the backbone, then a linear head) trained on the rendered
face corpus ``synthetic_faces`` (``datasets/synthetic_faces``), on one of two
tasks (``pretrain.task``):

* ``expression``: seed 004's nine macro-expressions (its stage 1), tested on
  ``pretrain.held_out`` identities never trained on;
* ``identity``: which of the corpus's identities a face is (VGGFace2's task),
  tested on one held-out render (a pose and expression not trained on) per
  identity.

The backbone keys and ``data.image_size`` are those of the run that will use
the weights: ``experiments.pretrain.ensure_weights`` copies them from the run's
config (a run asks for the pretraining with ``--config.model.weights=`` the
``WEIGHTS_SPEC``, e.g. ``pretrained:synthetic_faces``, or
``pretrained:synthetic_faces:tiny`` for this file's ``tiny`` preset). The
defaults are seed 001's default backbone (the ResNet-50 topology at width 8)
at 48². The seed is the pretraining's own, fixed: the runs of every seed share
one pretraining.

Presets: ``default`` (about 2.5 minutes on an idle 2-core CPU at 48², the corpus build
excluded) and ``tiny`` (for tests: the tiny corpus and backbone, seconds).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import base
from merjax.errors import UserError

WEIGHTS_SPEC = "pretrained:synthetic_faces"   # --config.model.weights value: "this backbone's synthetic pretraining"
TASKS = ("expression", "identity")

PRESETS: dict[str, base.Preset] = {
    "default": {},
    "tiny": {
        "data.name": "synthetic_faces/tiny",
        "data.image_size": 32,
        "model.backbone.stage_sizes": (1, 1, 1, 1),
        "model.backbone.width": 4,
        "pretrain.held_out": 2,
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.eval_batch_size": 16,
    },
}


def is_spec(weights: str) -> bool:
    """Whether a ``config.model.weights`` value asks for the synthetic pretraining (``WEIGHTS_SPEC[:PRESET]``)."""
    return weights == WEIGHTS_SPEC or str(weights).startswith(WEIGHTS_SPEC + ":")


def spec_preset(weights: str) -> str:
    """The pretraining preset a spec names: ``pretrained:synthetic_faces:tiny`` -> 'tiny' ('default' when none).

    Raises:
      UserError: naming ``--config.model.weights`` and the presets, for an unknown one.
    """
    preset = weights[len(WEIGHTS_SPEC) + 1:] if weights != WEIGHTS_SPEC else "default"
    if preset not in PRESETS:
        raise UserError(f"--config.model.weights={weights!r}: unknown pretraining preset {preset!r}; use "
                        f"{WEIGHTS_SPEC!r} or {WEIGHTS_SPEC}:PRESET with PRESET one of {tuple(PRESETS)}")
    return preset


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    cfg = base.base()
    cfg.experiment = "pretrain"
    cfg.data.name = "synthetic_faces/default"
    cfg.data.image_size = 48
    cfg.sampler.name = "frames"
    cfg.model.name = "frame_classifier"
    cfg.model.backbone.stage_sizes = (3, 4, 6, 3)   # seed 001's ResNet-50 topology ...
    cfg.model.backbone.width = 8                    # ... at its default preset's width
    cfg.model.backbone.se_reduction = 0
    cfg.model.head = ml_collections.ConfigDict({"hidden": (), "dropout": 0.0})   # linear, as VGGFace2's classifier
    cfg.loss.class_weights = False                  # every class and identity has the same number of images
    cfg.train.epochs = 8                            # 4 left it underfit: held-out 0.52 vs 0.64, probe 0.61 vs 0.68
    cfg.train.batch_size = 64
    cfg.train.eval_batch_size = 128
    cfg.train.learning_rate = 3e-3
    cfg.pretrain = ml_collections.ConfigDict()
    cfg.pretrain.task = "expression"                # or "identity" (TASKS)
    cfg.pretrain.held_out = 20                      # expression: identities tested on, never trained on
    return base.apply_presets(cfg, PRESETS, preset)
