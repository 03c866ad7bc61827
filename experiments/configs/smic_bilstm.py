"""Seed 001 Exp-III: VGGFace2 ResNet-50 per frame → 1-layer BiLSTM → fc1–fc3, SMIC, 5-fold by subject.

Presets (``experiments/configs/seed001.py``): ``default`` (synthetic SMIC-like
data, CPU, minutes), ``paper`` (SMIC-HS with the non-micro class, 224², N=13,
GPU), ``smoke`` (seconds, for tests); ``+exp1_encoder`` starts the encoder
from the same fold's Exp-I network.
"""

from experiments.configs import seed001


def get_config(preset: str = "default"):
    # seed 001 §4.5: one Bi-LSTM layer
    return seed001.config("smic_bilstm", preset, temporal={"kind": "bilstm", "layers": 1, "hidden": 256})
