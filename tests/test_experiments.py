"""End to end: the ``smoke`` preset of seed 001's experiments, on the synthetic ``tiny`` dataset."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from experiments import cv
from experiments.workdir import claim
from experiments.configs import smic_bilstm, smic_vggface2
from merjax.data import pipeline
from tests import fake_databases as fake
from tests.conftest import make_clip_set
from merjax.train import optim
from merjax.train.checkpoint import Checkpointer
from merjax.train.state import create_train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check_summary(summary, workdir, num_classes=3):
    for key in ("accuracy", "uf1", "uar"):
        assert 0.0 <= summary[key] <= 1.0
    confusion = np.asarray(summary["confusion"])
    assert confusion.shape == (num_classes, num_classes)
    assert confusion.sum() == summary["num_clips"] == sum(f["num_samples"] for f in summary["folds"])
    np.testing.assert_allclose(summary["accuracy"], np.trace(confusion) / confusion.sum())
    tested = [s for f in summary["folds"] for s in f["test_subjects"]]
    assert len(tested) == len(set(tested))                      # each subject tested once
    for fold in summary["folds"]:
        assert not set(fold["test_subjects"]) & set(fold["val_subjects"])
    for name in ("config.json", "summary.json", "summary.md", "confusion.png", "learning_curve_loss.png",
                 "learning_curve_accuracy.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["uf1"] == summary["uf1"]


def _run_claimed(config, workdir: str):
    """``cv.run`` in a claimed workdir, as the command line runs it (the claim writes config.json)."""
    with claim(workdir, config):
        return cv.run(config, workdir)


def _run_smoke(config_module, data_dir: str, workdir: str):
    config = config_module.get_config("smoke")
    config.data.data_dir = data_dir
    summary = _run_claimed(config, workdir)
    _check_summary(summary, workdir)
    return config, summary


@pytest.mark.slow
def test_smoke_bilstm_end_to_end_and_restart_reuses_folds(tmp_path, tiny_data_dir):
    workdir = str(tmp_path / "run")
    config, summary = _run_smoke(smic_bilstm, tiny_data_dir, workdir)
    for fold in summary["folds"]:
        history = json.load(open(os.path.join(workdir, fold["name"], "result.json")))["history"]
        assert len(history) == config.train.epochs
        assert all(np.isfinite(h["train_loss"]) for h in history)
    assert summary["provenance"]["stage_folds"] == {"total": config.protocol.k, "reused": 0}
    again = cv.run(config, workdir)                              # finished folds are reused, not retrained
    assert again["confusion"] == summary["confusion"]
    # The rerun's wall time says it excludes the reused folds' training.
    assert again["provenance"]["stage_folds"] == {"total": config.protocol.k, "reused": config.protocol.k}
    assert f"{config.protocol.k} of {config.protocol.k} stage-folds were finished by an earlier run" in open(
        os.path.join(workdir, "summary.md")).read()


@pytest.mark.slow
def test_smoke_frame_model_reports_frame_and_clip_level(tmp_path, tiny_data_dir):
    _, summary = _run_smoke(smic_vggface2, tiny_data_dir, str(tmp_path / "frames"))
    assert summary["sample_level"]["name"] == "frame"
    assert summary["sample_level"]["num_samples"] > summary["num_clips"]
    assert "Frame level (every test frame a sample)" in open(os.path.join(tmp_path / "frames", "summary.md")).read()
    for fold in summary["folds"]:
        assert set(fold["training_samples"]["balanced_samples_per_class"].values()) == {16}


@pytest.mark.slow
def test_two_stages_hand_each_folds_exp1_backbone_to_its_clip_model(tmp_path, tiny_data_dir):
    """``smoke+exp1_encoder``: per fold, Exp-I trains first and the clip model starts from its backbone."""
    config = smic_bilstm.get_config("smoke+exp1_encoder")
    config.data.data_dir = tiny_data_dir
    workdir = str(tmp_path / "stages")
    summary = _run_claimed(config, workdir)
    _check_summary(summary, workdir)
    assert list(summary["stages"]) == ["exp1", "clips"] and summary["stages"]["clips"]["final"]
    for fold in summary["folds"]:
        exp1_dir, clips_dir = (os.path.join(workdir, fold["name"], stage) for stage in ("exp1", "clips"))
        assert os.path.isfile(os.path.join(exp1_dir, cv.VARIABLES_FILE))
        clips = json.load(open(os.path.join(clips_dir, "result.json")))
        assert clips["init"]["from"] == "exp1" and clips["init"]["copied_parameters"] > 0
        assert clips["init"]["fresh_subtrees"] == ["head", "temporal"]
        exp1 = json.load(open(os.path.join(exp1_dir, "result.json")))
        assert "sample_level" in exp1["test"] and "sample_level" not in clips["test"]
        stamp = json.load(open(os.path.join(clips_dir, cv.STAMP_FILE)))
        assert stamp["stage"]["init_from"] == json.load(open(os.path.join(exp1_dir, "result.json")))["stamp"]
    assert "| exp1 |" in open(os.path.join(workdir, "summary.md")).read()
    again = cv.run(config, workdir)                              # both stages of every fold reused
    assert again["stages"] == summary["stages"]
    assert again["provenance"]["stage_folds"] == {"total": 2 * config.protocol.k, "reused": 2 * config.protocol.k}


@pytest.mark.slow
def test_command_line_runs_smoke_preset_with_overrides(tmp_path, tiny_data_dir):
    command = [sys.executable, "-m", "experiments.smic_lstm", "--config=experiments/configs/smic_lstm.py:smoke",
               f"--config.data.data_dir={tiny_data_dir}", "--config.train.epochs=1", f"--workdir={tmp_path / 'cli'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pooled over folds" in result.stdout
    config = json.load(open(tmp_path / "cli" / "config.json"))
    assert config["train"]["epochs"] == 1 and config["model"]["temporal"]["kind"] == "lstm"


def test_unknown_preset_and_protocol_are_named():
    with pytest.raises(ValueError, match="nope"):
        smic_bilstm.get_config("nope")
    config = smic_bilstm.get_config("smoke")
    config.protocol.kind = "leave_some_out"
    with pytest.raises(ValueError, match="leave_some_out"):
        cv.make_folds(config, type("C", (), {"num_classes": 3, "subjects": [], "labels": []})())


@pytest.mark.slow
def test_smoke_with_frozen_cached_prefix_keeps_the_prefix(tmp_path, tiny_data_dir):
    """A run with ``train.freeze_until``: the prefix is cached once and its weights end as they began."""
    config = smic_bilstm.get_config("smoke")
    config.data.data_dir = tiny_data_dir
    config.train.freeze_until = "layer2"
    config.train.cache_variants = 2
    workdir = str(tmp_path / "frozen")
    summary = _run_claimed(config, workdir)
    _check_summary(summary, workdir)
    prefix = summary["frozen_prefix"]
    assert prefix["freeze_until"] == "layer2" and prefix["cached"] and prefix["variants"] == 2
    assert prefix["location"] == "memory" and prefix["dtype"] == "float16"
    assert "Backbone frozen up to `layer2`" in open(os.path.join(workdir, "summary.md")).read()

    clip_set = cv.load_clip_set(config)
    setup = cv.setup_stage(config, clip_set)
    fold = summary["folds"][0]["name"]
    result = json.load(open(os.path.join(workdir, fold, "result.json")))
    template = create_train_state(setup.model, setup.variables, setup.tx, jax.random.key(0),
                                  steps_per_epoch=result["steps_per_epoch"],
                                  learning_rate_fn=optim.learning_rate_schedule(config.train))
    final, _, _ = Checkpointer(os.path.join(workdir, fold, "checkpoints")).restore(template)
    initial, trained = flatten_dict(setup.variables["params"]), flatten_dict(final.params)
    for path, value in trained.items():
        module = path[1] if path[0] == "backbone" else ""
        if module in ("conv1", "bn1") or module.startswith(("layer1_", "layer2_")):
            np.testing.assert_array_equal(value, initial[path], err_msg=str(path))
        elif path[-1] == "kernel":
            assert not np.allclose(value, initial[path]), path


def _write_small_smic(root) -> None:
    """4 subjects x 3 classes x 1 clip of 8 frames, with SMIC's real naming."""
    for index, subject in enumerate(("s1", "s2", "s3", "s4")):
        for emotion, short in (("negative", "ne"), ("positive", "po"), ("surprise", "sur")):
            fake.write_frames(fake.smic_clip_folder(root, subject, emotion, f"{subject}_{short}_01"),
                              fake.FakeClip(index, range(100, 108)), fake.smic_frame_name(cropped=False))


@pytest.mark.slow
def test_smoke_on_a_real_database_layout_builds_it_with_faces_and_runs(tmp_path):
    """``--config.data.name=smic/hs --config.data.manual_dir=...``: the builder runs, then the CV."""
    _write_small_smic(tmp_path / "SMIC")
    config = smic_bilstm.get_config("smoke")
    config.data.name = "smic/hs"
    config.data.manual_dir = str(tmp_path / "SMIC")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.faces.crop_size = 40
    summary = _run_claimed(config, str(tmp_path / "run"))
    _check_summary(summary, str(tmp_path / "run"))
    assert summary["num_clips"] == 12
    assert os.path.isfile(tmp_path / "tfds" / "smic" / "hs" / "1.1.0" / "metadata.json")


def test_cross_database_and_composite_loso_folds_from_the_config():
    first, second = make_clip_set(num_subjects=3), make_clip_set(num_subjects=2)
    clip_set = pipeline.concat_clip_sets([
        dataclasses.replace(first, datasets=np.full(len(first), "samm")),
        dataclasses.replace(second, datasets=np.full(len(second), "casme2"))])
    config = smic_bilstm.get_config("smoke")
    config.protocol.kind, config.protocol.train, config.protocol.test = "cross_database", "samm", "casme2"
    (fold,) = cv.make_folds(config, clip_set)
    assert set(clip_set.datasets[fold.train]) == {"samm"} and set(clip_set.datasets[fold.test]) == {"casme2"}
    config.protocol.kind = "composite_loso"
    folds = cv.make_folds(config, clip_set)
    # both databases use subject ids s1, s2: five subjects, not three
    assert sorted(f.name for f in folds) == sorted(
        [f"loso_samm/s{i}" for i in (1, 2, 3)] + [f"loso_casme2/s{i}" for i in (1, 2)])
    config.protocol.kind = "leave_two_out"
    with pytest.raises(ValueError, match="unknown protocol 'leave_two_out'"):
        cv.make_folds(config, clip_set)
