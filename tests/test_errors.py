"""Errors a user can act on: one line naming the value, file or key and the fix; exit status 2 without a traceback.

Config values are checked by direct ``validate`` calls; the command lines by
``main(argv)`` in this process where they allow it, and by one subprocess each
where only a new process shows what a user sees (the experiments' absl CLI,
``MERJAX_DATA_DIR`` read at import).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets import build
from datasets.core.layout import ManualDirError
from datasets.synthetic_me import difficulty
from experiments import cv
from experiments.configs import gradcam_layers, smic_bilstm, smic_lstm, smic_vggface2
from experiments.configs.validate import validate
from merjax.data import pipeline, protocols
from merjax.errors import UserError
from tests.conftest import make_clip_set

REPO = Path(__file__).resolve().parents[1]
TINY = "synthetic_me/tiny"


def _message(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def _smoke():
    return smic_bilstm.get_config("smoke")


# --------------------------------------------------------------------------- #
# Config values, checked before anything runs.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("module", [smic_bilstm, smic_lstm, smic_vggface2, gradcam_layers])
@pytest.mark.parametrize("preset", ["default", "paper", "smoke"])
def test_every_shipped_config_is_valid(module, preset: str) -> None:
    validate(module.get_config(preset))


def test_presets_are_data_applied_last_and_join_with_plus() -> None:
    smoke = smic_lstm.get_config("smoke")
    assert smoke.model.temporal.hidden == 8 and smoke.model.temporal.layers == 3   # the preset's size wins
    assert smic_lstm.get_config("default").model.temporal.hidden == 256
    staged = smic_bilstm.get_config("smoke+exp1_encoder")
    assert staged.preset == "smoke+exp1_encoder" and tuple(staged.stage_order) == ("exp1", "clips")
    validate(staged)
    with pytest.raises(UserError, match=r"unknown preset 'exp2'.*joined by '\+'"):
        smic_bilstm.get_config("smoke+exp2")


@pytest.mark.parametrize("key, value, expected", [
    ("train.epochs", 0, "--config.train.epochs=0: must be an integer >= 1"),
    ("train.epochs", -3, "--config.train.epochs=-3: must be an integer >= 1"),
    ("train.learning_rate", -0.1, "--config.train.learning_rate=-0.1: must be a number in (0, inf)"),
    ("train.batch_size", 0, "--config.train.batch_size=0: must be an integer >= 1"),
    ("train.eval_batch_size", 0, "--config.train.eval_batch_size=0: must be an integer >= 1"),
    ("data.image_size", 0, "--config.data.image_size=0: must be an integer >= 8"),
    ("sampler.window", 0, "--config.sampler.window=0: must be an integer >= 1"),
    ("sampler.train_stride", 0, "--config.sampler.train_stride=0: must be an integer >= 1"),
    ("sampler.eval_stride", -1, "--config.sampler.eval_stride=-1: must be an integer >= 1"),
    ("sampler.name", "all_of_it", "--config.sampler.name='all_of_it': must be one of ('frames', 'sliding_windows'"),
    ("sampler.streams", (), "--config.sampler.streams=(): must be a non-empty tuple of stream names"),
    ("augment.flip_prob", 1.5, "--config.augment.flip_prob=1.5: must be a number in [0, 1]"),
    ("targets", ("label", "mood"), "--config.targets=('label', 'mood'): must be a non-empty tuple of targets"),
    ("loss.name", "hinge", "--config.loss.name='hinge': must be one of ('cross_entropy', 'focal')"),
    ("loss.gamma", -1.0, "--config.loss.gamma=-1.0: must be a number in [0, inf)"),
    ("data.name", "smic/hs_5class", "--config.data.name='smic/hs_5class': unknown config 'hs_5class'"),
    ("data.name", "synthetic_me/tiny+nope", "unknown dataset 'nope'; known datasets: ["),
    ("data.manual_dir", "/no/such/folder", "--config.data.manual_dir='/no/such/folder': no such folder"),
    ("data.faces.crop_size", 4, "--config.data.faces: crop_size must be at least 8 pixels, got 4"),
    ("data.faces.detector", "mtcnn", "--config.data.faces.detector='mtcnn': must be one of ('dlib', 'fan')"),
    ("protocol.kind", "leave_some_out", "--config.protocol.kind='leave_some_out': must be one of ("),
    ("protocol.k", 1, "--config.protocol.k=1: must be an integer >= 2"),
    ("protocol.val_subjects", -1, "--config.protocol.val_subjects=-1: must be an integer >= 0"),
    ("protocol.train", "samm", "--config.protocol.train='samm': is used by --config.protocol.kind=cross_database"),
    ("model.name", "video", "--config.model.name='video': must be one of ('"),
    ("model.backbone.name", "vit", "--config.model.backbone.name='vit': must be one of ('resnet'"),
    ("model.dtype", "float64", "--config.model.dtype='float64': must be one of ('float32', 'bfloat16')"),
    ("model.temporal.kind", "gru", "--config.model.temporal.kind='gru': must be one of ('lstm', 'bilstm')"),
    ("model.head.dropout", 1.0, "--config.model.head.dropout=1.0: must be a number in [0, 1)"),
    ("model.weights", "/no/weights.pkl", "--config.model.weights='/no/weights.pkl': no such file"),
    ("train.optimizer", "lamb", "--config.train.optimizer='lamb': must be one of ('adam', 'adamw', 'sgd')"),
    ("train.schedule", "linear", "--config.train.schedule='linear': must be one of ('constant', 'cosine', 'step')"),
    ("train.warmup_epochs", 2.0, "--config.train.warmup_epochs=2.0: must be a number in [0, 2)"),
    ("train.step_epochs", (5,), "--config.train.step_epochs=(5,): must be a tuple of epochs inside the run"),
    ("train.select", "loss", "--config.train.select='loss': must be one of ('', 'uf1', 'uar', 'accuracy')"),
    ("train.freeze_until", "block3", "--config.train.freeze_until='block3': must be one of ('', 'conv1', 'pool1', "
                                     "'layer1', 'layer2', 'layer3', 'layer4', 'pooled')"),
    ("train.cache_dtype", "int8", "--config.train.cache_dtype='int8': must be one of ('float16', 'float32')"),
    ("seed", -1, "--config.seed=-1: must be an integer >= 0"),
])
def test_a_bad_value_names_the_key_and_what_is_allowed(key: str, value, expected: str) -> None:
    config = _smoke()
    *sections, leaf = key.split(".")
    section = config
    for name in sections:
        section = section[name]
    section[leaf] = value
    with pytest.raises(UserError) as error:
        validate(config)
    assert expected in _message(error)


def test_a_bad_value_inside_a_stage_names_the_stage_key() -> None:
    config = smic_bilstm.get_config("smoke+exp1_encoder")
    config.stages.exp1.train = {"epochs": 0}
    with pytest.raises(UserError) as error:
        validate(config)
    assert "--config.stages.exp1.train.epochs=0: must be an integer >= 1" in _message(error)


def test_select_needs_validation_subjects_and_cross_database_two_databases() -> None:
    config = _smoke()
    config.train.select, config.protocol.val_subjects = "uf1", 0
    with pytest.raises(UserError, match=r"--config.protocol.val_subjects=0: must be >= 1 with "
                                        r"--config.train.select='uf1'"):
        validate(config)
    config = _smoke()
    config.protocol.kind, config.protocol.train, config.protocol.test = "cross_database", "samm", "samm"
    with pytest.raises(UserError, match=r"--config.protocol.test='samm': must differ from --config.protocol.train"):
        validate(config)


def test_the_gradcam_section_is_validated_too() -> None:
    config = gradcam_layers.get_config("smoke")
    config.gradcam.inner_k = 1
    with pytest.raises(UserError, match="gradcam.inner_k must be >= 2"):
        validate(config)


# --------------------------------------------------------------------------- #
# Folds the data cannot give.
# --------------------------------------------------------------------------- #

def test_more_folds_than_subjects_says_which_k_or_loso() -> None:
    config = _smoke()
    config.protocol.k = 5
    with pytest.raises(UserError) as error:
        cv.make_folds(config, make_clip_set(num_subjects=4))
    message = _message(error)
    assert "--config.protocol.k=5 folds need at least 5 subjects, but fake/clips has 4" in message
    assert "--config.protocol.k=4" in message and "--config.protocol.kind=loso" in message


def _one_subject_holds_class_2():
    clip_set = make_clip_set(num_subjects=4)
    labels = clip_set.labels.copy()
    labels[(labels == 2) & (clip_set.subjects != "s3")] = 0
    return dataclasses.replace(clip_set, labels=labels, class_names=("neutral", "happy", "surprise"))


@pytest.mark.parametrize("kind", ["loso", "composite_loso"])
def test_a_class_without_training_example_is_named_by_its_name(kind: str) -> None:
    config = _smoke()
    config.protocol.kind, config.protocol.val_subjects = kind, 0
    with pytest.raises(UserError) as error:
        cv.make_folds(config, _one_subject_holds_class_2())
    message = _message(error)
    fold = "loso_s3" if kind == "loso" else "loso_fake/s3"
    assert (f"fold '{fold}': class 'surprise' has no training example (all 2 of its examples are on the test "
            f"side: the class needs examples from more subjects)") in message
    assert f"--config.protocol.kind={kind}" in message and "--config.protocol.val_subjects" in message


def test_protocols_name_classes_by_name_when_given() -> None:
    clip_set = _one_subject_holds_class_2()
    with pytest.raises(UserError, match=r"class 'surprise' has no training example"):
        protocols.loso(clip_set.subjects, clip_set.labels, val_subjects=0, class_names=clip_set.class_names)
    with pytest.raises(UserError, match=r"class 2 has no training example"):   # numbers without names
        protocols.loso(clip_set.subjects, clip_set.labels, val_subjects=0, num_classes=3)


# --------------------------------------------------------------------------- #
# Prepared copies: missing, damaged or stale ones are named with the command that rebuilds them.
# --------------------------------------------------------------------------- #

@pytest.fixture
def tiny_copy(tiny_dataset_dir: str, tmp_path: Path) -> tuple[str, Path]:
    """A private copy of the built tiny dataset: (its data_dir, its prepared folder)."""
    data_dir = tmp_path / "data"
    prepared = data_dir / Path(tiny_dataset_dir).relative_to(Path(tiny_dataset_dir).parents[2])
    shutil.copytree(tiny_dataset_dir, prepared)
    return str(data_dir), prepared


def _run_build(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        build.main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


DAMAGES = {
    "no dataset_info.json": (lambda folder: (folder / "dataset_info.json").unlink(),
                             "is incomplete (no dataset_info.json: a build cut short?)"),
    "truncated dataset_info.json": (
        lambda folder: (folder / "dataset_info.json").write_text((folder / "dataset_info.json").read_text()[:150]),
        "dataset_info.json is unreadable ("),
    "no label.labels.txt": (lambda folder: (folder / "label.labels.txt").unlink(),
                            "label.labels.txt is missing: the prepared copy lost its class names"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_copy_is_named_and_the_named_command_rebuilds_it(damage: str, tiny_copy,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, folder = tiny_copy
    spoil, expected = DAMAGES[damage]
    spoil(folder)
    command = f"python -m datasets.build {TINY} --data_dir={data_dir} --overwrite"
    for load in (lambda: build.ensure_built(TINY, data_dir), lambda: pipeline.load_clips(str(folder), 16)):
        with pytest.raises(UserError) as error:
            load()
        message = _message(error)
        assert expected in message and message.endswith(f"rebuild it: {command}")
    status, _, err = _run_build([TINY, f"--data_dir={data_dir}"], capsys)   # no longer exit 0, reusing it
    assert status == 2 and err == f"error: {message}\n"
    status, out, _ = _run_build(command.split()[3:], capsys)
    assert status == 0 and out.strip().splitlines()[-1] == str(folder)
    assert pipeline.load_clips(str(folder), 16).class_names == ("negative", "positive", "surprise")


def test_an_unreadable_record_is_named_with_the_rebuild_command(tiny_copy) -> None:
    data_dir, folder = tiny_copy
    (shard,) = folder.glob("*.array_record*")
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(UserError) as error:
        pipeline.load_clips(str(folder), 16)
    assert f"{folder}: record 0 of split 'train' is unreadable (RuntimeError: " in _message(error)
    assert _message(error).endswith(f"rebuild it: python -m datasets.build {TINY} --data_dir={data_dir} --overwrite")


def test_an_experiment_on_clip_folder_without_manual_dir_names_its_own_flag(tmp_path: Path) -> None:
    config = _smoke()
    config.data.name, config.data.data_dir = "clip_folder", str(tmp_path / "data")
    with pytest.raises(ManualDirError) as error:
        cv.load_clip_set(config)
    first_line = str(error.value).splitlines()[0]
    assert first_line == ("clip_folder: no --config.data.manual_dir given; pass --config.data.manual_dir=ROOT, a "
                          "folder laid out as below")
    assert "--manual_dir" not in str(error.value).replace("--config.data.manual_dir", "")
    assert isinstance(error.value, UserError)


# --------------------------------------------------------------------------- #
# The command lines: one line, exit status 2, a traceback only when asked for.
# --------------------------------------------------------------------------- #

def test_build_cli_prints_one_line_and_a_traceback_only_with_verbose(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synthetic_me/smic_huge", f"--data_dir={tmp_path}"]
    status, out, err = _run_build(argv, capsys)
    assert status == 2 and out == ""
    assert err == ("error: unknown config 'smic_huge' of dataset 'synthetic_me'; known configs: ['smic_like', "
                   "'smic_like_4class', 'megc_like', 'casme2_like', 'tiny']\n")
    status, _, err = _run_build([*argv, "--verbose"], capsys)
    assert status == 2 and err.startswith("Traceback (most recent call last):") and err.endswith(
        "error: unknown config 'smic_huge' of dataset 'synthetic_me'; known configs: ['smic_like', "
        "'smic_like_4class', 'megc_like', 'casme2_like', 'tiny']\n")
    status, _, err = _run_build(["smic/hs", f"--data_dir={tmp_path}", "--crop_size=4"], capsys)
    assert status == 2 and err == "error: bad face option: crop_size must be at least 8 pixels, got 4\n"
    status, _, err = _run_build([TINY, f"--data_dir={tmp_path}", f"--manual_dir={tmp_path}"], capsys)
    assert status == 2 and err == f"error: {TINY} is not read from a database: drop --manual_dir\n"


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        with build.user_errors_as_one_line():
            raise RuntimeError("a bug")


def test_difficulty_without_scikit_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)   # as after `pip install -e .`: import sklearn fails
    with pytest.raises(SystemExit) as exit_:
        difficulty.main(["--data_dir=/nonexistent"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: datasets.synthetic_me.difficulty fits scikit-learn models, which `pip install -e .` does not "
        "install: pip install scikit-learn (or pip install -e '.[test]')\n")


def test_experiment_cli_refuses_a_bad_value_in_one_line_with_exit_2(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "experiments.smic_bilstm", "--config=experiments/configs/smic_bilstm.py:smoke",
               "--config.train.epochs=0", f"--workdir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "error: --config.train.epochs=0: must be an integer >= 1 (training epochs)"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()   # refused before the workdir is claimed


def test_build_cli_builds_into_merjax_data_dir(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "datasets.build", TINY], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MERJAX_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "synthetic_me" / "tiny" / "1.1.0")
    assert np.asarray(pipeline.load_clips(result.stdout.strip().splitlines()[-1], 16).labels).size == 24
