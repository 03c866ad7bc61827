"""The whole training path can learn: a clip model fits an easy spatio-temporal task.

Each class brightens a different image quadrant over time (``make_clip_set``). A
first-frame model cannot tell the classes apart; the ResNet + BiLSTM trained by
the experiments' fold runner must, on held-out subjects.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments import cv
from experiments.configs import smic_bilstm
from tests.conftest import make_clip_set


@pytest.mark.slow
def test_clip_model_learns_easy_motion_task_on_held_out_subjects(tmp_path):
    config = smic_bilstm.get_config("smoke")
    config.sampler.window = 6
    config.sampler.train_stride = 1
    config.sampler.balance_per_class = 48
    config.augment.max_rotation = 0.0
    config.augment.flip_prob = 0.0     # a flip would swap the left/right quadrants that define the classes
    config.model.backbone.stage_sizes = (1, 1)
    config.model.backbone.width = 8
    config.model.head.dropout = 0.0
    config.train.epochs = 6
    config.train.learning_rate = 3e-3
    clip_set = make_clip_set(num_subjects=4, clips_per_class=3, size=16, min_length=8, max_length=14)
    folds = cv.make_folds(config, clip_set)
    stamp = cv.fold_stamp(cv.run_stamp(config, clip_set), clip_set, folds[0], "main", "")
    result = cv.run_stage_fold(cv.setup_stage(config, clip_set), folds[0], 0, str(tmp_path), stamp)
    history = result["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.2
    test = result["test"]
    accuracy = np.mean(np.asarray(test["labels"]) == np.asarray(test["predictions"]))
    assert accuracy >= 0.8, (accuracy, [round(h["train_loss"], 3) for h in history])
