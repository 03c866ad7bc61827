"""Seed 001's Table 3 (``experiments/window_sweep.py``): Exp-III (``smic_bilstm``) with the window length N swept.

Presets as in ``smic_bilstm`` (``experiments/configs/seed001.py``); for Exp-II
pass ``--config=experiments/configs/smic_lstm.py:PRESET`` instead. The
experiment keeps its name (``smic_bilstm``): each N is that experiment.
"""

import ml_collections

from experiments.configs import smic_bilstm


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    config = smic_bilstm.get_config(preset)
    config.seeds = (0, 1, 2)   # Table 3's cells as mean ± std over seeds
    return config
