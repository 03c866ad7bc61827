"""The engine: a new method is a model, a config (and perhaps a target or sampler) — never an engine branch;
folds trained together predict what folds trained one after another predict."""

from __future__ import annotations

import json

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import cv, stages
from experiments.configs import base, smic_bilstm
from merjax.data import targets
from merjax.models import registry
from tests.conftest import make_clip_set


class MotionEnergy(nn.Module):
    """A toy method: the brightness change (last valid frame − first) per image quadrant of a whole clip → two
    heads."""

    num_classes: int

    @nn.compact
    def __call__(self, frames, mask, *, train: bool):
        frames = frames.astype(jnp.float32) / 255.0
        motion = jnp.diff(frames, axis=1).mean(-1) * mask[:, 1:, None, None]
        half = frames.shape[2] // 2
        quadrants = jnp.stack([motion[:, :, :half, :half], motion[:, :, :half, half:], motion[:, :, half:, :half],
                               motion[:, :, half:, half:]], axis=-1).mean((2, 3)).sum(1) * 10.0
        hidden = nn.relu(nn.Dense(16)(quadrants))
        return {"label": nn.Dense(self.num_classes)(hidden), "odd_subject": nn.Dense(2)(hidden)}


@registry.register_model("test_motion_energy")
def motion_energy(config, num_classes, *, frozen_until, input_endpoint):
    return MotionEnergy(num_classes)


@targets.target("odd_subject")
def odd_subject(clip_set):
    """A second target (whether the subject number is odd), to exercise multi-target losses."""
    return np.asarray([int(s[1:]) % 2 for s in clip_set.subjects], np.int32), 2


def _toy_config() -> ml_collections.ConfigDict:
    config = base.base()
    config.experiment = "toy"
    config.protocol.kind = "loso"
    config.protocol.val_subjects = 0
    config.targets = ("label", "odd_subject")
    config.sampler.name = "whole_clip"
    config.augment.flip_prob = 0.0
    config.augment.max_rotation = 0.0
    config.model.name = "test_motion_energy"
    config.loss.name = "focal"
    config.loss.target_weights = ml_collections.ConfigDict({"odd_subject": 0.5})
    config.train.epochs = 6
    config.train.batch_size = 4
    config.train.eval_batch_size = 4
    config.train.learning_rate = 0.03
    config.train.schedule = "constant"
    return config


def _run_folds(config, clip_set, workdir):
    folds = cv.make_folds(config, clip_set)
    (stage,) = stages.resolve(config)
    return cv.run_fold_stage(stage, clip_set, folds, cv.run_stamp(config, clip_set), str(workdir),
                             [{} for _ in folds], keep_variables=False, single=True)


def test_a_new_model_target_and_loss_run_through_the_engine_unchanged(tmp_path):
    clip_set = make_clip_set(num_subjects=4, clips_per_class=2, size=8, min_length=4, max_length=7)
    results = _run_folds(_toy_config(), clip_set, tmp_path)
    assert len(results) == 4
    tested = sorted(clip for result in results for clip in result["test"]["clips"])
    assert tested == sorted(clip_set.clip_ids.tolist())
    history = results[0]["history"]
    assert {"train_loss", "train_loss_label", "train_loss_odd_subject"} <= set(history[0])
    assert history[-1]["train_loss_label"] < 0.7 * history[0]["train_loss_label"]
    pooled = np.mean([p == l for r in results for p, l in zip(r["test"]["predictions"], r["test"]["labels"])])
    assert pooled >= 0.8       # each class brightens its own quadrant: easy to tell apart
    # focal α = inverse class frequency of the fold's training side, per target
    assert set(results[0]["training_samples"]["class_weights"]) == set(clip_set.class_names)


@pytest.mark.slow
def test_folds_trained_together_predict_what_folds_trained_one_by_one_predict(tmp_path):
    """LOSO over 4 subjects with unequal folds (one fewer clip for one subject): vmap over stacked folds."""
    clip_set = make_clip_set(num_subjects=4, clips_per_class=2, size=8, min_length=4, max_length=7)
    clip_set = clip_set.subset(np.arange(1, len(clip_set)))   # s1 has one clip fewer: unequal steps per epoch
    config = _toy_config()
    config.loss.name = "cross_entropy"
    config.train.batch_size = 2
    config.train.eval_batch_size = 2
    one_by_one = _run_folds(config, clip_set, tmp_path / "sequential")
    config.train.vectorize_folds = True
    together = _run_folds(config, clip_set, tmp_path / "vectorized")
    assert len({r["steps_per_epoch"] for r in one_by_one}) > 1
    for a, b in zip(one_by_one, together):
        assert a["test"]["clips"] == b["test"]["clips"]
        assert a["test"]["predictions"] == b["test"]["predictions"]
        np.testing.assert_allclose(a["test"]["log_probs"], b["test"]["log_probs"], atol=2e-4)
        np.testing.assert_allclose([h["train_loss"] for h in a["history"]],
                                   [h["train_loss"] for h in b["history"]], rtol=1e-4)


@pytest.mark.slow
def test_a_run_stage_on_other_data_trains_once_and_every_fold_starts_from_it(tmp_path, tiny_data_dir):
    """Stage `pre` (scope 'run') trains Exp-I once on the tiny dataset; each fold's clip model starts from its
    backbone. The run's own clips are other clips (in memory here)."""
    config = smic_bilstm.get_config("smoke")
    config.data.data_dir = tiny_data_dir
    config.data.name = "synthetic_me/smic_like"      # the run's data: not the stage's
    config.stages = ml_collections.ConfigDict({
        "pre": {"scope": "run", "data": {"name": "synthetic_me/tiny"}, "sampler": {"name": "frames",
                "balance_per_class": 16}, "model": {"name": "frame_classifier"}, "train": {"epochs": 1}},
        "clips": {"init": {"from_stage": "pre", "include": ("backbone",)}, "train": {"epochs": 1}},
    })
    config.stage_order = ("pre", "clips")
    pre, clips = stages.resolve(config)
    saved: dict[str, str] = {}
    trained = cv.run_scope_stage(pre, str(tmp_path), saved)
    assert trained["test"] is None and saved == {"pre": str(tmp_path / "pre")}
    assert (tmp_path / "pre" / cv.VARIABLES_FILE).is_file()
    assert cv.run_scope_stage(pre, str(tmp_path), {}) == trained          # finished: reused, not retrained
    clip_set = make_clip_set(num_subjects=4, size=16, min_length=5, max_length=8)
    folds = cv.make_folds(clips.config, clip_set)
    results = cv.run_fold_stage(clips, clip_set, folds, cv.run_stamp(config, clip_set), str(tmp_path),
                                [dict(saved) for _ in folds], keep_variables=False, single=False)
    pre_stamp = cv.saved_stamp_digest(str(tmp_path / "pre"))
    for fold, result in zip(folds, results):
        assert result["init"]["from"] == "pre" and result["init"]["fresh_subtrees"] == ["head", "temporal"]
        stamp = json.loads((tmp_path / fold.name / "clips" / cv.STAMP_FILE).read_text())
        assert stamp["stage"]["init_from"] == pre_stamp
