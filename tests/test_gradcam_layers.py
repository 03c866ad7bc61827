"""The Grad-CAM layer-choice experiment: smoke run on the synthetic ``tiny`` dataset, CLI and selection rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import gradcam_layers
from experiments.configs import gradcam_layers as gradcam_config
from merjax.models import ResNet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny_data_dir(tiny_dataset_dir) -> str:
    """The TFDS data_dir holding the built tiny dataset (<data_dir>/synthetic_me/tiny/<version>)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset_dir)))


def _check_outputs(workdir: str, layers, select_on: str, grid_examples: int) -> dict:
    with open(os.path.join(workdir, "gradcam_scores.json")) as f:
        scores = json.load(f)
    assert set(scores["layers"]) == set(layers)
    for per_layer in scores["layers"].values():
        for stage in ("before", "after"):
            stats = per_layer[stage]
            assert 0 <= stats["empty_maps"] <= scores["heldout"]["clips"]
            if stats["inside_fraction"]["mean"] is not None:
                assert 0.0 <= stats["inside_fraction"]["mean"] <= 1.0 and stats["inside_fraction"]["std"] >= 0
                assert stats["lift"]["mean"] >= 0
    assert 0.0 < scores["regions"]["area_fraction"]["mean"] < 1.0
    assert scores["select_on"] == select_on
    lifts = {layer: s[select_on]["lift"]["mean"] for layer, s in scores["layers"].items()
             if s[select_on]["lift"]["mean"] is not None}
    assert scores["recommended_layer"] == max(lifts, key=lifts.get)
    names = ResNet(stage_sizes=(1, 1, 1, 1)).endpoint_names
    assert scores["freeze_until"] == names[names.index(scores["recommended_layer"]) - 1]
    assert scores["freeze_flag"] == f"--config.train.freeze_until={scores['freeze_until']}"
    with Image.open(os.path.join(workdir, "gradcam_grid.png")) as image:
        assert image.size == gradcam_layers.grid_pixels(min(grid_examples, scores["heldout"]["clips"]), len(layers))
    return scores


@pytest.mark.slow
def test_smoke_run_scores_every_layer_before_and_after(tmp_path, tiny_data_dir):
    config = gradcam_config.get_config("smoke")
    config.data.data_dir = tiny_data_dir
    workdir = str(tmp_path / "run")
    summary = gradcam_layers.run(config, workdir)
    scores = _check_outputs(workdir, config.gradcam.layers, "after", config.gradcam.grid_examples)
    assert scores["recommended_layer"] == summary["recommended_layer"]
    assert scores["heldout"]["clips"] == 12 and scores["fold"] == "fold0"      # tiny: 2 of 4 subjects held out
    assert not set(scores["train_subjects"]) & set(scores["test_subjects"])
    assert len(scores["training"]["history"]) == config.train.epochs
    assert np.isfinite(scores["training"]["history"][-1]["train_loss"])
    table = gradcam_layers.markdown(summary)
    assert f"**Recommended l_s = {summary['recommended_layer']}**" in table
    assert all(f"| {layer} |" in table for layer in config.gradcam.layers)
    margin = summary["separation"]
    assert margin["runner_up"] in config.gradcam.layers and margin["runner_up"] != summary["recommended_layer"]
    assert ("Not separated from" in table) == (not margin["separated"])


@pytest.mark.slow
def test_command_line_with_overrides(tmp_path, tiny_data_dir):
    workdir = tmp_path / "cli"
    command = [sys.executable, "-m", "experiments.gradcam_layers",
               "--config=experiments/configs/gradcam_layers.py:smoke", f"--config.data.data_dir={tiny_data_dir}",
               "--config.train.epochs=1", "--config.gradcam.layers=('layer2','layer3')",
               "--config.gradcam.select_on=before", "--config.gradcam.grid_examples=2", f"--workdir={workdir}"]
    result = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = _check_outputs(str(workdir), ("layer2", "layer3"), "before", 2)
    assert "| lift before | lift after |" in result.stdout
    assert f"--config.train.freeze_until={scores['freeze_until']}" in result.stdout
    with open(workdir / "config.json") as f:
        assert json.load(f)["train"]["epochs"] == 1


def _layer(before: float | None, after: float | None) -> dict:
    def stage(value):
        return {"lift": {"mean": value, "std": 0.0}, "inside_fraction": {"mean": value, "std": 0.0}}
    return {"before": stage(before), "after": stage(after)}


def test_recommendation_and_freeze_point():
    names = ResNet(stage_sizes=(1, 1, 1, 1)).endpoint_names
    layers = {"layer1": _layer(1.4, 1.1), "layer2": _layer(1.2, 1.6), "layer3": _layer(None, 1.3)}
    assert gradcam_layers.recommend(layers, "after", names) == ("layer2", "layer1")
    assert gradcam_layers.recommend(layers, "before", names) == ("layer1", "pool1")
    assert gradcam_layers.recommend({"conv1": _layer(1.0, 1.0)}, "after", names) == ("conv1", "")
    with pytest.raises(ValueError, match="empty"):
        gradcam_layers.recommend({"layer3": _layer(None, 1.0)}, "before", names)


def test_separation_of_the_recommended_layer_uses_standard_errors():
    def lift(mean, sem):
        return {"after": {"lift": {"mean": mean, "sem": sem}}}

    clear = gradcam_layers.separation({"layer1": lift(1.5, 0.03), "layer2": lift(1.1, 0.04)}, "after", "layer1")
    assert clear["runner_up"] == "layer2" and clear["separated"]
    np.testing.assert_allclose([clear["difference"], clear["two_standard_errors"]], [0.4, 0.1])
    close = gradcam_layers.separation({"layer1": lift(1.12, 0.06), "layer2": lift(1.05, 0.06),
                                       "layer3": lift(None, None)}, "after", "layer1")
    assert close["runner_up"] == "layer2" and not close["separated"]
    assert gradcam_layers.separation({"layer1": lift(1.2, 0.1)}, "after", "layer1") is None


def test_examples_take_the_classes_in_turn():
    labels = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(gradcam_layers.pick_examples(labels, 4), [0, 3, 4, 1])
    np.testing.assert_array_equal(gradcam_layers.pick_examples(labels, 10), [0, 3, 4, 1, 5, 2])


@pytest.mark.parametrize("key,value,message", [("gradcam.select_on", "during", "during"),
                                               ("model.kind", "clip", "'frame'"),
                                               ("gradcam.layers", ("layer2", "pooled"), "spatial endpoints")])
def test_bad_settings_fail_before_any_work(tmp_path, key, value, message):
    config = gradcam_config.get_config("smoke")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message):
        gradcam_layers.run(config, str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")
