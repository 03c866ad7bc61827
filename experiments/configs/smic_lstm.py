"""Seed 001 Exp-II: VGGFace2 ResNet-50 per frame → 3-layer LSTM → fc1–fc3, SMIC, 5-fold by subject.

Presets as in ``smic_bilstm``.
"""

from experiments.configs import seed001


def get_config(preset: str = "default"):
    # seed 001 §4.4: a 3-layer LSTM decoder
    return seed001.config("smic_lstm", preset, temporal={"kind": "lstm", "layers": 3, "hidden": 256})
