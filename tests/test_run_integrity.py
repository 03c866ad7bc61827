"""A run never mixes configurations, survives a crash and keeps other runs out of its workdir."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from experiments import cv, workdir
from experiments.configs import smic_bilstm, smic_lstm
from experiments.configs.validate import validate
from merjax import files
from merjax.data import protocols
from merjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(data_dir: str, **overrides):
    config = smic_bilstm.get_config("smoke")
    config.data.data_dir = data_dir
    config.train.epochs = 1
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_dataset_dir):
    """One finished smoke run (seed 0, one epoch): its config, workdir and summary."""
    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset_dir)))
    config = smoke_config(data_dir)
    directory = str(tmp_path_factory.mktemp("runs") / "seed0")
    with workdir.claim(directory, config):
        summary = cv.run(config, directory)
    return config, directory, summary


@pytest.fixture
def used(finished, tmp_path):
    """A copy of the finished run's workdir that a test may change."""
    config, directory, summary = finished
    copy = str(tmp_path / "copy")
    shutil.copytree(directory, copy)
    return config, copy, summary


def test_same_config_reuses_finished_folds_without_training(used):
    config, directory, summary = used
    result_file = os.path.join(directory, summary["folds"][0]["name"], cv.RESULT_FILE)
    written = os.stat(result_file).st_mtime_ns
    with workdir.claim(directory, config):
        again = cv.run(config, directory)
    assert again["confusion"] == summary["confusion"] and again["uf1"] == summary["uf1"]
    assert os.stat(result_file).st_mtime_ns == written
    assert again["coverage"].startswith("every clip tested exactly once")


def test_another_seed_or_experiment_is_refused_naming_the_keys(used):
    config, directory, _ = used
    other_seed = config.copy_and_resolve_references()
    other_seed.seed = 1
    with pytest.raises(UserError, match=r"seed: 0 -> 1.*--overwrite"):
        with workdir.claim(directory, other_seed):
            pass
    lstm = smic_lstm.get_config("smoke")
    lstm.data.data_dir, lstm.train.epochs = config.data.data_dir, 1
    with pytest.raises(UserError) as error:
        with workdir.claim(directory, lstm):
            pass
    message = str(error.value)
    assert "experiment: 'smic_bilstm' -> 'smic_lstm'" in message and "model.temporal.kind" in message
    assert "\n" not in message


def test_fold_stamps_refuse_a_half_finished_run_of_another_seed_even_without_the_claim(used):
    config, directory, summary = used
    os.remove(os.path.join(directory, summary["folds"][-1]["name"], cv.RESULT_FILE))   # killed in the last fold
    other_seed = config.copy_and_resolve_references()
    other_seed.seed = 1
    with pytest.raises(UserError, match=r"config\.seed: 0 -> 1"):
        cv.run(other_seed, directory)


def test_changed_data_is_refused_by_the_fold_stamp(used, monkeypatch):
    config, directory, _ = used
    original = cv.load_data

    def relabelled(run_config):
        clip_set, directories = original(run_config)
        labels = clip_set.labels.copy()
        labels[0] = (labels[0] + 1) % clip_set.num_classes
        return dataclasses.replace(clip_set, labels=labels), directories

    monkeypatch.setattr(cv, "load_data", relabelled)
    with pytest.raises(UserError, match=r"data\.digest"):
        cv.run(config, directory)


def test_outputs_without_a_stamp_are_refused(used):
    config, directory, summary = used
    os.remove(os.path.join(directory, summary["folds"][0]["name"], cv.STAMP_FILE))
    with pytest.raises(UserError, match="without a stamp"):
        cv.run(config, directory)


def test_truncated_result_is_evaluated_again_from_the_checkpoints(used, caplog):
    config, directory, summary = used
    result_file = os.path.join(directory, summary["folds"][0]["name"], cv.RESULT_FILE)
    with open(result_file, "r+") as f:
        f.truncate(100)
    with caplog.at_level("WARNING"):
        again = cv.run(config, directory)
    assert any(result_file in record.getMessage() for record in caplog.records)
    assert again["confusion"] == summary["confusion"]
    assert files.read_json(result_file)["resumed_from_epoch"] == config.train.epochs - 1   # nothing retrained


def test_overwrite_starts_afresh(used):
    config, directory, _ = used
    other_seed = config.copy_and_resolve_references()
    other_seed.seed = 1
    with workdir.claim(directory, other_seed, overwrite=True):
        assert sorted(os.listdir(directory)) == [workdir.LOCK_FILE, workdir.CONFIG_FILE]
    assert files.read_json(os.path.join(directory, workdir.CONFIG_FILE))["seed"] == 1


def test_a_truncated_config_json_is_named(tmp_path):
    config = smic_bilstm.get_config("smoke")
    (tmp_path / workdir.CONFIG_FILE).write_text('{"seed": ')
    with pytest.raises(UserError, match=f"{tmp_path / workdir.CONFIG_FILE}.*not valid JSON"):
        with workdir.claim(str(tmp_path), config):
            pass


def test_lock_keeps_a_second_run_out_and_dies_with_its_holder(tmp_path):
    config = smic_bilstm.get_config("smoke")
    directory = str(tmp_path / "run")
    with workdir.claim(directory, config):
        with pytest.raises(UserError, match=f"workdir {directory} is in use .*pid {os.getpid()}"):
            with workdir.claim(directory, config):
                pass
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from experiments import workdir\n"
         "with workdir.lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)", directory],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            with workdir.claim(directory, config):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir.claim(directory, config):        # the kernel released the dead holder's lock
        pass


def test_coverage_check_names_a_clip_tested_twice_or_never(clip_set):
    config = smic_bilstm.get_config("smoke")
    folds = protocols.kfold_by_subject(clip_set.subjects, clip_set.labels, k=2, seed=0)

    def result(test):
        return {"test": {"clips": clip_set.clip_ids[test].tolist()}}

    good = [result(fold.test) for fold in folds]
    assert cv.check_coverage(config, clip_set, folds, good).startswith("every clip tested exactly once")
    with pytest.raises(RuntimeError, match="tested 2 times"):
        cv.check_coverage(config, clip_set, folds, [good[0], good[0]])
    with pytest.raises(RuntimeError, match="never tested"):
        cv.check_coverage(config, clip_set, folds[:1], good[:1])


def test_validation_subjects_train_when_nothing_is_selected_on_them(clip_set):
    fold = protocols.kfold_by_subject(clip_set.subjects, clip_set.labels, k=2, seed=0, val_subjects=1)[0]
    config = smic_bilstm.get_config("smoke")
    config.train.select = "uf1"
    train, val = cv.training_side(config, fold)
    assert np.array_equal(train, fold.train) and np.array_equal(val, fold.val) and len(val)
    config.train.select = ""
    train, val = cv.training_side(config, fold)
    assert np.array_equal(train, np.union1d(fold.train, fold.val)) and len(val) == 0
    assert not set(train) & set(fold.test)


def test_freeze_from_reads_each_seeds_own_layer_choice(clip_set, monkeypatch):
    folds = protocols.kfold_by_subject(clip_set.subjects, clip_set.labels, k=2, seed=0)
    read = []

    def per_fold(path, config, run_folds, clip_ids):
        read.append(path)
        return {fold.name: f"layer{i + 1}" for i, fold in enumerate(run_folds)}

    monkeypatch.setattr(cv.layer_choice, "freeze_until_per_fold", per_fold)
    config = smic_bilstm.get_config("smoke")
    config.seed = 2
    config.train.freeze_from = "runs/gradcam/seed_{seed}/gradcam_scores.json"
    configs = cv.fold_configs(config, clip_set, folds)
    assert read == ["runs/gradcam/seed_2/gradcam_scores.json"]
    assert [c.train.freeze_until for c in configs] == ["layer1", "layer2"]
    assert config.train.freeze_until == ""                      # the run's own config is left as it was


def test_validate_checks_the_layer_choice_file_of_every_seed(tmp_path):
    config = smic_bilstm.get_config("smoke")
    config.seeds = (0, 1)
    config.train.freeze_from = str(tmp_path / "seed_{seed}" / "gradcam_scores.json")
    (tmp_path / "seed_0").mkdir()
    (tmp_path / "seed_0" / "gradcam_scores.json").write_text("{}")
    with pytest.raises(UserError, match=r"train\.freeze_from.*seed_1/gradcam_scores\.json.*for seed 1"):
        validate(config)
    (tmp_path / "seed_1").mkdir()
    (tmp_path / "seed_1" / "gradcam_scores.json").write_text("{}")
    validate(config)
