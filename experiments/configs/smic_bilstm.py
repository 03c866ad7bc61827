"""Seed 001 Exp-III: VGGFace2 ResNet-50 per frame → 1-layer BiLSTM → fc1–fc3, SMIC, 5-fold by subject.

Presets (``experiments/configs/seed001.py``): ``default`` (synthetic SMIC-like
data, CPU, minutes), ``paper`` (SMIC-HS with the non-micro class, 224², N=13,
GPU), ``smoke`` (seconds, for tests); ``+exp1_encoder`` starts the encoder
from the same fold's Exp-I network.
"""

from experiments.configs import seed001


def get_config(preset: str = "default"):
    config = seed001.config("smic_bilstm", preset)
    config.model.temporal.kind = "bilstm"   # seed 001 §4.5: one Bi-LSTM layer
    config.model.temporal.layers = 1
    config.model.temporal.hidden = 256
    return config
