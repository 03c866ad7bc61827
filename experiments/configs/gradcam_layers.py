"""Seed 001's choice of the retraining layer l_s by Grad-CAM, per fold and leak-free (``experiments/gradcam_layers.py``).

The Exp-I setting (``smic_vggface2``: the ResNet on single frames, each class
resampled to one count). For every outer fold of the CV (same data, protocol
and seed as the run that will use the choice), the model is trained on part of
the fold's training-side subjects and Grad-CAM of every candidate layer is
scored on the apex frames of the other training-side subjects, before and after
training; no test subject of the fold takes part. Presets as in ``common``:
``default`` (synthetic ``smic_like``, minutes on a 2-core CPU), ``paper`` (real
SMIC-HS, GPU; add ``--config.model.weights=`` for the VGGFace2 backbone),
``smoke`` (seconds).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import smic_vggface2


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    config = smic_vggface2.get_config(preset)
    config.train.freeze_until = ""         # l_s is what this chooses: the Exp-I model trains every layer
    config.experiment = "gradcam_layers"
    config.gradcam = ml_collections.ConfigDict()
    config.gradcam.layers = ("layer1", "layer2", "layer3", "layer4")  # candidate l_s (backbone endpoints)
    config.gradcam.select_on = "after"     # recommend by the mean lift 'after' or 'before' training
    config.gradcam.folds = "all"           # outer folds to choose l_s for: 'all' or indices such as '0,2'
    # The selection subjects of a fold: inner_k subject-wise folds of its training side (train + val
    # subjects); the first inner_folds of them are each held out once (one model trained per held-out part).
    config.gradcam.inner_k = 4
    config.gradcam.inner_folds = 1
    # 'selection' (leak-free) or 'test (leaks)': score each fold's test subjects as seed 001 likely did;
    # for comparison only, --config.train.freeze_from refuses its output.
    config.gradcam.score_on = "selection"
    config.gradcam.margin = 0.15           # region dilation, fraction of the inter-ocular distance
    config.gradcam.grid_examples = 4       # scored examples (rows) in each gradcam_grid_<fold>.png
    if preset == "smoke":
        config.gradcam.inner_k = 2         # tiny: 2 training-side subjects per fold, one held out
    return config
