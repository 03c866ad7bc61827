"""Seed 001's choice of the retraining layer l_s by Grad-CAM, measured (``experiments/gradcam_layers.py``).

The Exp-I setting (``smic_vggface2``: the ResNet on single frames, each class
resampled to one count) trained on the first subject-wise fold; Grad-CAM of
every candidate layer is scored on the held-out subjects' apex frames before
and after training. Presets as in ``common``: ``default`` (synthetic
``smic_like``, minutes on a 2-core CPU), ``paper`` (real SMIC-HS, GPU; add
``--config.model.weights=`` for the VGGFace2 backbone), ``smoke`` (seconds).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import smic_vggface2


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    config = smic_vggface2.get_config(preset)
    config.experiment = "gradcam_layers"
    config.gradcam = ml_collections.ConfigDict()
    config.gradcam.layers = ("layer1", "layer2", "layer3", "layer4")  # candidate l_s (backbone endpoints)
    config.gradcam.select_on = "after"     # recommend by the mean lift 'after' or 'before' training
    config.gradcam.fold = 0                # which subject-wise fold to train on and score
    config.gradcam.margin = 0.15           # region dilation, fraction of the inter-ocular distance
    config.gradcam.grid_examples = 4       # held-out examples (rows) in gradcam_grid.png
    return config
