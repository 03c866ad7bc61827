"""Tests of the synthetic pretraining (experiments/pretrain.py) and merjax backbone files (merjax/weights/backbone.py).

The fast tests check the weights file, the spec and the cache's stamp without
training; the slow one pretrains the tiny preset (tiny corpus, ResNet (1,1,1,1)
at width 4) end to end through ``ensure_weights``.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
import pytest

from experiments import pretrain
from experiments.configs import pretrain as pretrain_config
from experiments.configs import seed001
from merjax import files
from merjax.errors import UserError
from merjax.models import registry
from merjax.weights import backbone as backbone_weights

SIZE = 32


def _run_config(data_dir: str, seed: int = 0, weights: str = pretrain.WEIGHTS_SPEC + ":tiny"):
    """A seed-001 clip run (smoke sizes) asking for the synthetic pretraining."""
    config = seed001.config("smic_bilstm", "smoke")
    config.data.data_dir = data_dir
    config.seed = seed
    config.model.weights = weights
    return config


def _variables(model_config: ml_collections.ConfigDict, seed: int = 0) -> dict:
    """Random variables of the config's clip classifier (3 classes), shaped by tracing its init (no compile)."""
    model = registry.create_model(model_config, 3)
    inputs = {"frames": np.zeros((1, 2, SIZE, SIZE, 3), np.uint8), "mask": np.ones((1, 2), bool)}
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                               **inputs, train=False))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.normal(size=leaf.shape).astype(leaf.dtype), shapes)


def _backbone(variables: dict) -> dict:
    return {collection: tree["backbone"] for collection, tree in variables.items() if "backbone" in tree}


def _save(path: str, model_config: ml_collections.ConfigDict, seed: int = 1) -> dict:
    saved = _backbone(jax.device_get(_variables(model_config, seed)))
    backbone_weights.save_backbone(path, saved, {"backbone": backbone_weights.architecture(model_config.backbone)})
    return saved


def test_a_saved_backbone_loads_into_a_clip_classifier_through_model_weights(tmp_path) -> None:
    config = _run_config(str(tmp_path)).model
    path = str(tmp_path / "backbone.msgpack")
    saved = _save(path, config)
    variables = _variables(config, seed=0)
    loaded = registry.import_backbone_weights(config, variables, path)
    jax.tree.map(np.testing.assert_array_equal, _backbone(loaded), saved)
    jax.tree.map(np.testing.assert_array_equal, loaded["params"]["head"], variables["params"]["head"])
    assert not np.array_equal(saved["params"]["conv1"]["kernel"], variables["params"]["backbone"]["conv1"]["kernel"])


def test_a_backbone_file_of_another_architecture_is_refused_naming_the_file(tmp_path) -> None:
    config = _run_config(str(tmp_path)).model
    path = str(tmp_path / "backbone.msgpack")
    _save(path, config)
    wide = config.copy_and_resolve_references()
    wide.backbone.width = 8
    with pytest.raises(UserError, match=r"backbone\.msgpack: trained for backbone width=4, configured width=8"):
        registry.import_backbone_weights(wide, _variables(wide), path)
    # A description that agrees but variables that do not: the differing variable is named, not reshaped.
    description = files.read_json(backbone_weights.description_path(path))
    description["backbone"]["width"] = 8
    files.atomic_write_json(backbone_weights.description_path(path), description)
    with pytest.raises(UserError, match=r"backbone\.msgpack: (params|batch_stats)/backbone/\S+ is \(.*\) in the "
                                        r"file and \(.*\) in the configured backbone"):
        registry.import_backbone_weights(wide, _variables(wide), path)
    os.unlink(backbone_weights.description_path(path))
    with pytest.raises(UserError, match=r"backbone description .*backbone\.json does not exist"):
        registry.import_backbone_weights(config, _variables(config), path)


def test_the_spec_takes_the_runs_backbone_input_size_and_data_dir_but_not_its_seed(tmp_path) -> None:
    assert pretrain_config.is_spec("pretrained:synthetic_faces")
    assert pretrain_config.is_spec("pretrained:synthetic_faces:tiny")
    assert not pretrain_config.is_spec("") and not pretrain_config.is_spec("/weights/resnet50_ft_weight.pkl")
    run = _run_config(str(tmp_path))
    config = pretrain.pretraining_config(run)
    assert config.model.backbone.to_dict() == run.model.backbone.to_dict()
    assert (config.data.image_size, config.data.data_dir) == (run.data.image_size, run.data.data_dir)
    assert config.data.name == "synthetic_faces/tiny" and config.seed == 0
    seeds = {pretrain.weights_directory(pretrain.pretraining_config(_run_config(str(tmp_path), seed)))
             for seed in (0, 1, 2)}
    assert seeds == {pretrain.weights_directory(config)}
    assert pretrain.weights_directory(config).startswith(os.path.join(str(tmp_path), pretrain.PRETRAINED_DIR))
    wider = _run_config(str(tmp_path))
    wider.model.backbone.width = 8
    larger = _run_config(str(tmp_path))
    larger.data.image_size = 48
    directories = {pretrain.weights_directory(pretrain.pretraining_config(run)) for run in (wider, larger)}
    assert len(directories | {pretrain.weights_directory(config)}) == 3
    with pytest.raises(UserError, match="unknown pretraining preset 'huge'"):
        pretrain.pretraining_config(_run_config(str(tmp_path), weights=pretrain.WEIGHTS_SPEC + ":huge"))
    assert pretrain.ensure_weights(_run_config(str(tmp_path), weights="/some/file.pkl")) == "/some/file.pkl"


def test_the_held_out_side_of_each_task(tmp_path) -> None:
    from datasets import build
    from merjax.data import pipeline

    corpus = pipeline.load_clips(build.ensure_built("synthetic_faces/tiny", str(tmp_path)), 16)
    config = pretrain_config.get_config("tiny")
    fold = pretrain.held_out_fold(config, corpus)
    assert sorted(set(corpus.subjects[fold.test].tolist())) == ["id0004", "id0005"]
    assert not set(corpus.subjects[fold.train].tolist()) & set(corpus.subjects[fold.test].tolist())
    assert len(fold.train) + len(fold.test) == len(corpus) and pretrain.task_clips(config, corpus) is corpus
    with config.unlocked():
        config.pretrain.task = "identity"
    fold = pretrain.held_out_fold(config, corpus)
    # identity k holds out one image of expression k
    assert dict(zip(corpus.subjects[fold.test].tolist(), corpus.labels[fold.test].tolist())) == {
        f"id{k:04d}": k for k in range(6)}
    assert set(corpus.subjects[fold.train].tolist()) == set(corpus.subjects.tolist())
    by_identity = pretrain.task_clips(config, corpus)
    assert by_identity.num_classes == 6
    assert [by_identity.class_names[label] for label in by_identity.labels] == [
        f"synthetic_faces/{subject}" for subject in corpus.subjects]


def test_the_command_line_reproduces_the_config() -> None:
    config = pretrain_config.get_config("tiny")
    with config.unlocked():
        config.data.image_size = 40
        config.model.backbone.stage_sizes = (2, 1, 1, 1)
    assert pretrain.command(config) == ("python -m experiments.pretrain --config=experiments/configs/pretrain.py:tiny "
                                        "--config.data.image_size=40 --config.model.backbone.stage_sizes=(2, 1, 1, 1)")


def test_the_cache_is_reused_under_the_same_stamp_and_refused_under_another(tmp_path, monkeypatch) -> None:
    run = _run_config(str(tmp_path))
    config = pretrain.pretraining_config(run)
    directory = pretrain.weights_directory(config)
    path = os.path.join(directory, pretrain.WEIGHTS_FILE)
    trained = []

    def fake_train(config, directory):
        trained.append(directory)
        backbone_weights.save_backbone(path, _backbone(_variables(run.model)), {
            "backbone": backbone_weights.architecture(config.model.backbone),
            "stamp": pretrain.pretraining_stamp(config)})
        return path

    monkeypatch.setattr(pretrain, "train", fake_train)
    assert pretrain.ensure_pretrained(config) == (path, True)
    assert pretrain.ensure_pretrained(config) == (path, False)
    assert pretrain.ensure_weights(_run_config(str(tmp_path), seed=2)) == path
    resolved = pretrain.with_weights_resolved(run)
    assert resolved.model.weights == path and run.model.weights == pretrain.WEIGHTS_SPEC + ":tiny"
    assert trained == [directory]
    # The same folder holding weights of another stamp (e.g. a corpus changed under the same version) is refused.
    description = files.read_json(backbone_weights.description_path(path))
    description["stamp"]["corpus"]["config"]["seed"] = 5
    files.atomic_write_json(backbone_weights.description_path(path), description)
    with pytest.raises(UserError, match=r"pretrained from something else \(corpus\.config\.seed: 5 -> 0\)"):
        pretrain.ensure_pretrained(config)
    assert trained == [directory]


@pytest.mark.slow
def test_ensure_weights_pretrains_once_and_a_run_loads_the_trained_backbone(tmp_path) -> None:
    run = _run_config(str(tmp_path))
    path = pretrain.ensure_weights(run)
    directory = os.path.dirname(path)
    description = files.read_json(backbone_weights.description_path(path))
    assert description["held_out"]["task"] == "expression" and description["held_out"]["images"] == 2 * 9 * 2
    assert description["stamp"] == pretrain.pretraining_stamp(pretrain.pretraining_config(run))
    # The exported backbone is the one the engine trained (its final variables), not the initial one.
    from experiments import cv

    trained = cv.load_variables(os.path.join(directory, pretrain.STAGE))
    run_variables = _variables(run.model)
    loaded = registry.import_backbone_weights(run.model, run_variables, path)
    jax.tree.map(np.testing.assert_array_equal, _backbone(loaded), _backbone(trained))
    # Another seed of the run reuses the file without training.
    modified = os.stat(path).st_mtime_ns
    assert pretrain.ensure_weights(_run_config(str(tmp_path), seed=1)) == path
    assert os.stat(path).st_mtime_ns == modified
    # The record over seeds names the resolved file, as each seed's own does (its config still names the spec).
    from experiments import seeds

    record = seeds.seeds_provenance(run, [{"provenance": None}], wall_seconds=0.0)
    assert record["weights"]["path"] == os.path.abspath(path) and not record["weights"]["from_scratch"]
