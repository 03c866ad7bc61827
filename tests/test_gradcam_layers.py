"""The Grad-CAM layer choice: no test subject in any fold's choice, the per-fold choice file and its reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import cv, gradcam_layers, layer_choice
from experiments.configs import gradcam_layers as gradcam_config
from experiments.configs import smic_bilstm, smic_vggface2
from merjax import files
from merjax.errors import UserError
from merjax.rng import derived_seed
from merjax.models import ResNet
from tests.conftest import make_clip_set

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENDPOINTS = ResNet(stage_sizes=(1, 1, 1, 1)).endpoint_names


@pytest.fixture
def tiny_data_dir(tiny_dataset_dir) -> str:
    """The TFDS data_dir holding the built tiny dataset (<data_dir>/synthetic_me/tiny/<version>)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset_dir)))


def _subjects(clip_set, clips) -> set[str]:
    return set(clip_set.subjects[clips].tolist())


# --------------------------------------------------------------------------- #
# Which subjects choose a fold's layer.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("protocol", ["kfold_by_subject", "loso"])
def test_selection_subjects_are_training_side_and_never_tested(protocol):
    clip_set = make_clip_set(num_subjects=8, clips_per_class=1, size=8, min_length=3, max_length=4)
    config = gradcam_config.get_config("smoke")
    config.protocol.kind, config.protocol.k = protocol, 4
    config.gradcam.inner_k = config.gradcam.inner_folds = 3
    folds = cv.make_folds(config, clip_set)
    for index, fold in enumerate(folds):
        training_side = np.union1d(fold.train, fold.val)
        splits = gradcam_layers.selection_splits(config, clip_set, fold, index)
        assert len(splits) == 3
        scored = []
        for train_clips, score_clips, _ in splits:
            assert not _subjects(clip_set, score_clips) & _subjects(clip_set, fold.test)
            assert not _subjects(clip_set, train_clips) & _subjects(clip_set, fold.test)
            assert not _subjects(clip_set, train_clips) & _subjects(clip_set, score_clips)
            assert set(score_clips) | set(train_clips) == set(training_side)
            scored.extend(score_clips.tolist())
        # With inner_folds = inner_k every training-side clip is scored exactly once.
        assert sorted(scored) == training_side.tolist()


def test_the_leaky_mode_scores_the_test_subjects_with_the_cv_training():
    clip_set = make_clip_set(num_subjects=4, size=8, min_length=3, max_length=4)
    config = gradcam_config.get_config("smoke")
    config.gradcam.score_on = "test (leaks)"
    for index, fold in enumerate(cv.make_folds(config, clip_set)):
        [(train_clips, score_clips, seed)] = gradcam_layers.selection_splits(config, clip_set, fold, index)
        np.testing.assert_array_equal(train_clips, fold.train)
        np.testing.assert_array_equal(score_clips, fold.test)
        assert seed == derived_seed(config.seed, index)   # the seed cv.run trains fold `index` with


def test_too_many_inner_folds_for_a_training_side_are_refused():
    clip_set = make_clip_set(num_subjects=4, size=8, min_length=3, max_length=4)
    config = gradcam_config.get_config("smoke")
    config.gradcam.inner_k = 3                       # a smoke fold has 2 training-side subjects
    fold = cv.make_folds(config, clip_set)[0]
    with pytest.raises(UserError, match="gradcam.inner_k=3: cannot split the 2 training-side subjects of fold0"):
        gradcam_layers.selection_splits(config, clip_set, fold, 0)


def test_fold_setting():
    assert gradcam_layers.fold_indices("all", 3) == [0, 1, 2]
    assert gradcam_layers.fold_indices("2,0", 3) == [2, 0]
    assert gradcam_layers.fold_indices("(1)", 3) == [1]
    for bad in ("first", "0,0", "-1", ""):
        with pytest.raises(UserError, match="must be 'all' or distinct fold indices"):
            gradcam_layers.fold_indices(bad, 3)
    with pytest.raises(UserError, match="fold 3 does not exist; the protocol has 3 folds"):
        gradcam_layers.fold_indices("1,3", 3)


# --------------------------------------------------------------------------- #
# The choice file and its reader.
# --------------------------------------------------------------------------- #

def _choice_file(path, config, clip_set, folds, freeze_until=("layer1", "")) -> dict[str, str]:
    """A gradcam_scores.json as ``run`` writes it (stamp + per-fold entries); returns the expected choice."""
    entries = {}
    for fold, endpoint in zip(folds, freeze_until):
        side = np.union1d(fold.train, fold.val)
        entries[fold.name] = {"freeze_until": endpoint, "selection_clips": clip_set.clip_ids[side[:2]].tolist(),
                              "training_clips": clip_set.clip_ids[side[2:]].tolist()}
    files.atomic_write_json(path, {"folds": entries, "stamp": layer_choice.stamp(config, clip_set, folds)})
    return {name: entry["freeze_until"] for name, entry in entries.items()}


@pytest.fixture
def choice(tmp_path):
    """(path, the CV run's config, clip set, folds, expected choice) of a choice made for that run."""
    clip_set = make_clip_set(num_subjects=4, size=8, min_length=3, max_length=4)
    config = gradcam_config.get_config("smoke")
    run_config = smic_bilstm.get_config("smoke")
    folds = cv.make_folds(run_config, clip_set)
    path = str(tmp_path / "gradcam_scores.json")
    expected = _choice_file(path, config, clip_set, cv.make_folds(config, clip_set))
    return path, run_config, clip_set, folds, expected


def test_the_choice_file_round_trips(choice):
    path, run_config, clip_set, folds, expected = choice
    assert layer_choice.freeze_until_per_fold(path, run_config, folds, clip_set.clip_ids) == expected
    assert expected == {"fold0": "layer1", "fold1": ""}


@pytest.mark.parametrize("preset", ["default", "paper", "smoke"])
def test_presets_of_the_choice_and_the_cv_agree_on_what_is_compared(preset):
    """The README's workflow (gradcam_layers, then a CV experiment, same preset) is never refused."""
    choice_keys = layer_choice._compared(json.loads(gradcam_config.get_config(preset).to_json_best_effort()))
    for experiment in (smic_bilstm, smic_vggface2):
        assert layer_choice._compared(json.loads(experiment.get_config(preset).to_json_best_effort())) == choice_keys


@pytest.mark.parametrize("key,value,named", [
    ("seed", 1, "seed: 0 -> 1"),
    ("protocol.kind", "loso", "protocol.kind: 'kfold_by_subject' -> 'loso'"),
    ("data.name", "synthetic_me/smic_like", "data.name: 'synthetic_me/tiny' -> 'synthetic_me/smic_like'"),
    ("protocol.val_subjects", 0, "protocol.val_subjects: 1 -> 0"),
    ("model.weights", "/w/resnet50_ft_weight.pkl", "model.weights: '' -> '/w/resnet50_ft_weight.pkl'"),
])
def test_a_choice_for_another_run_is_refused_naming_the_key(choice, key, value, named):
    path, run_config, clip_set, folds, _ = choice
    section, name = key.split(".") if "." in key else (None, key)
    (run_config[section] if section else run_config)[name] = value
    with pytest.raises(UserError) as error:
        layer_choice.freeze_until_per_fold(path, run_config, folds, clip_set.clip_ids)
    message = str(error.value)
    assert named in message and "\n" not in message
    assert (f"python -m experiments.gradcam_layers --config=experiments/configs/gradcam_layers.py:smoke "
            f"--config.{key}={value} --workdir=") in message and "--overwrite" in message


def test_other_clips_in_a_fold_are_refused(choice):
    path, run_config, clip_set, folds, _ = choice
    clip_ids = clip_set.clip_ids.copy()
    renamed = int(folds[1].test[0])
    clip_ids[renamed] = "s9_0_0"
    side = next(side for side in ("train", "val") if renamed in getattr(folds[0], side))   # fold0 is checked first
    with pytest.raises(UserError, match=f"fold0 {side} clips differ: 1 only in the file \\(e.g. "
                                        f"'{clip_set.clip_ids[renamed]}'\\), 1 only in this run \\(e.g. 's9_0_0'\\)"):
        layer_choice.freeze_until_per_fold(path, run_config, folds, clip_ids)


def test_a_missing_fold_is_refused(tmp_path):
    clip_set = make_clip_set(num_subjects=4, size=8, min_length=3, max_length=4)
    config = gradcam_config.get_config("smoke")
    folds = cv.make_folds(config, clip_set)
    path = str(tmp_path / "gradcam_scores.json")
    _choice_file(path, config, clip_set, folds[:1])
    with pytest.raises(UserError, match=r"has no layer choice for fold1 \(it has \['fold0'\]\).*gradcam.folds=all"):
        layer_choice.freeze_until_per_fold(path, smic_bilstm.get_config("smoke"), folds, clip_set.clip_ids)


def test_a_choice_scored_on_test_subjects_is_refused(tmp_path):
    clip_set = make_clip_set(num_subjects=4, size=8, min_length=3, max_length=4)
    config = gradcam_config.get_config("smoke")
    config.gradcam.score_on = "test (leaks)"
    folds = cv.make_folds(config, clip_set)
    path = str(tmp_path / "gradcam_scores.json")
    _choice_file(path, config, clip_set, folds)
    with pytest.raises(UserError, match=r"scored the layers on the folds' test subjects \(gradcam.score_on="
                                        r"'test \(leaks\)'\).*--config.gradcam.score_on=selection"):
        layer_choice.freeze_until_per_fold(path, smic_bilstm.get_config("smoke"), folds, clip_set.clip_ids)


def test_a_choice_that_used_a_test_clip_is_refused(choice):
    path, run_config, clip_set, folds, _ = choice
    written = files.read_json(path)
    written["folds"]["fold0"]["selection_clips"].append(str(clip_set.clip_ids[folds[0].test[0]]))
    files.atomic_write_json(path, written)
    with pytest.raises(UserError, match="made the choice for fold0 with its test clip"):
        layer_choice.freeze_until_per_fold(path, run_config, folds, clip_set.clip_ids)


def test_a_missing_or_foreign_file_is_refused(choice, tmp_path):
    _, run_config, clip_set, folds, _ = choice
    with pytest.raises(UserError, match="does not exist"):
        layer_choice.freeze_until_per_fold(str(tmp_path / "none.json"), run_config, folds, clip_set.clip_ids)
    files.atomic_write_json(tmp_path / "old.json", {"recommended_layer": "layer2", "freeze_until": "layer1"})
    with pytest.raises(UserError, match="not a per-fold layer choice"):
        layer_choice.freeze_until_per_fold(str(tmp_path / "old.json"), run_config, folds, clip_set.clip_ids)


# --------------------------------------------------------------------------- #
# The experiment end to end.
# --------------------------------------------------------------------------- #

def _check_outputs(workdir: str, layers, select_on: str, grid_examples: int) -> dict:
    scores = files.read_json(os.path.join(workdir, "gradcam_scores.json"))
    for name, fold in scores["folds"].items():
        assert set(fold["layers"]) == set(layers)
        for per_layer in fold["layers"].values():
            for stage in ("before", "after"):
                stats = per_layer[stage]
                assert 0 <= stats["empty_maps"] <= fold["heldout"]["clips"]
                if stats["inside_fraction"]["mean"] is not None:
                    assert 0.0 <= stats["inside_fraction"]["mean"] <= 1.0 and stats["inside_fraction"]["std"] >= 0
                    assert stats["lift"]["mean"] >= 0
        assert 0.0 < fold["area_fraction"]["mean"] < 1.0
        lifts = {layer: s[select_on]["lift"]["mean"] for layer, s in fold["layers"].items()
                 if s[select_on]["lift"]["mean"] is not None}
        assert fold["recommended_layer"] == max(lifts, key=lifts.get)
        assert fold["freeze_until"] == ENDPOINTS[ENDPOINTS.index(fold["recommended_layer"]) - 1]
        with Image.open(os.path.join(workdir, f"gradcam_grid_{name}.png")) as image:
            assert image.size == gradcam_layers.grid_pixels(min(grid_examples, fold["heldout"]["clips"]), len(layers))
    assert scores["select_on"] == select_on
    return scores


@pytest.mark.slow
def test_smoke_run_chooses_per_fold_from_training_side_subjects_only(tmp_path, tiny_data_dir):
    config = gradcam_config.get_config("smoke")
    config.data.data_dir = tiny_data_dir
    workdir = str(tmp_path / "run")
    summary = gradcam_layers.run(config, workdir)
    scores = _check_outputs(workdir, config.gradcam.layers, "after", config.gradcam.grid_examples)
    assert list(scores["folds"]) == ["fold0", "fold1"]
    clip_set = cv.load_clip_set(config)
    folds = cv.make_folds(config, clip_set)
    for fold in folds:
        entry = scores["folds"][fold.name]
        assert entry["test_subjects"] == sorted(_subjects(clip_set, fold.test))
        assert not set(entry["selection_subjects"]) & set(entry["test_subjects"])
        training_side = _subjects(clip_set, np.union1d(fold.train, fold.val))
        assert set(entry["selection_subjects"]) <= training_side
        assert entry["heldout"]["clips"] == 6                 # tiny: 1 of the 2 training-side subjects, 6 clips
        assert not set(entry["selection_clips"] + entry["training_clips"]) & set(clip_set.clip_ids[fold.test])
        [record] = entry["training"]
        assert len(record["history"]) == config.train.epochs and np.isfinite(record["history"][-1]["train_loss"])
    # The CV run of the same preset reads the choice back, fold by fold.
    run_config = smic_bilstm.get_config("smoke")
    run_config.data.data_dir = tiny_data_dir
    path = os.path.join(workdir, "gradcam_scores.json")
    assert layer_choice.freeze_until_per_fold(path, run_config, cv.make_folds(run_config, clip_set),
                                              clip_set.clip_ids) == {
        name: entry["freeze_until"] for name, entry in scores["folds"].items()}
    table = gradcam_layers.markdown(summary)
    assert all(f"| {name} | " in table and f"**{entry['recommended_layer']}**" in table
               for name, entry in scores["folds"].items())
    assert f"--config.train.freeze_from={os.path.abspath(path)}" in table


@pytest.mark.slow
def test_command_line_leaky_mode_scores_test_subjects_and_is_refused_by_the_cv(tmp_path, tiny_data_dir):
    workdir = tmp_path / "cli"
    command = [sys.executable, "-m", "experiments.gradcam_layers",
               "--config=experiments/configs/gradcam_layers.py:smoke", f"--config.data.data_dir={tiny_data_dir}",
               "--config.train.epochs=1", "--config.gradcam.layers=('layer2','layer3')", "--config.gradcam.folds=1",
               "--config.gradcam.score_on=test (leaks)", "--config.gradcam.select_on=before",
               "--config.gradcam.grid_examples=2", f"--workdir={workdir}"]
    result = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = _check_outputs(str(workdir), ("layer2", "layer3"), "before", 2)
    [(name, entry)] = scores["folds"].items()
    assert name == "fold1" and entry["selection_subjects"] == entry["test_subjects"]
    assert "These layers were scored on the folds' test subjects" in result.stdout
    with open(workdir / "config.json") as f:
        assert json.load(f)["train"]["epochs"] == 1
    run_config = smic_bilstm.get_config("smoke")
    run_config.data.data_dir = tiny_data_dir
    clip_set = cv.load_clip_set(run_config)
    with pytest.raises(UserError, match="scored the layers on the folds' test subjects"):
        layer_choice.freeze_until_per_fold(str(workdir / "gradcam_scores.json"), run_config,
                                           cv.make_folds(run_config, clip_set), clip_set.clip_ids)


# --------------------------------------------------------------------------- #
# The selection rule.
# --------------------------------------------------------------------------- #

def _layer(before: float | None, after: float | None) -> dict:
    def stage(value):
        return {"lift": {"mean": value, "std": 0.0}, "inside_fraction": {"mean": value, "std": 0.0}}
    return {"before": stage(before), "after": stage(after)}


def test_recommendation_and_freeze_point():
    layers = {"layer1": _layer(1.4, 1.1), "layer2": _layer(1.2, 1.6), "layer3": _layer(None, 1.3)}
    assert gradcam_layers.recommend(layers, "after", ENDPOINTS) == ("layer2", "layer1")
    assert gradcam_layers.recommend(layers, "before", ENDPOINTS) == ("layer1", "pool1")
    assert gradcam_layers.recommend({"conv1": _layer(1.0, 1.0)}, "after", ENDPOINTS) == ("conv1", "")
    with pytest.raises(ValueError, match="empty"):
        gradcam_layers.recommend({"layer3": _layer(None, 1.0)}, "before", ENDPOINTS)


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
                                               ("gradcam.score_on", "test", "gradcam.score_on must be one of"),
                                               ("gradcam.inner_k", 1, "gradcam.inner_k must be >= 2"),
                                               ("gradcam.inner_folds", 3, "gradcam.inner_folds must be in 1..gradcam"),
                                               ("gradcam.folds", "first", "gradcam.folds='first'"),
                                               ("train.freeze_until", "layer1", "train.freeze_until must be ''"),
                                               ("train.freeze_from", "c.json", "train.freeze_from must be ''"),
                                               ("model.name", "clip_classifier", "'frame_classifier'"),
                                               ("gradcam.layers", ("layer2", "pooled"), "spatial endpoints")])
def test_bad_settings_fail_before_any_work(tmp_path, key, value, message):
    config = gradcam_config.get_config("smoke")
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(UserError, match=message):
        gradcam_layers.run(config, str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")


def test_several_seeds_are_refused(tmp_path):
    config = gradcam_config.get_config("smoke")
    config.seeds = (0, 1)
    with pytest.raises(UserError, match=r"runs one seed, got seeds=\(0, 1\): run it once per seed"):
        gradcam_layers.run(config, str(tmp_path / "never"))
