"""Seed 001 Exp-III: VGGFace2 ResNet-50 per frame → 1-layer BiLSTM → fc1–fc3, SMIC, 5-fold by subject.

Presets: ``default`` (synthetic SMIC-like data, CPU, minutes), ``paper`` (SMIC-HS
with the non-micro class, 224², N=13, GPU), ``smoke`` (seconds, for tests).
"""

from experiments.configs import common


def get_config(preset: str = "default"):
    config = common.base()
    config.experiment = "smic_bilstm"
    config.model.temporal.kind = "bilstm"   # seed 001 §4.5: one Bi-LSTM layer
    config.model.temporal.layers = 1
    config.model.temporal.hidden = 256
    return common.apply_preset(config, preset)
