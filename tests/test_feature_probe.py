"""benchmarks.feature_probe on the tiny synthetic dataset with seed 001's smoke-sized backbone: the table and
the weights it reads through ``config.model.weights``."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from benchmarks import feature_probe
from experiments import cv
from merjax.models import registry
from merjax.weights import backbone as backbone_weights


def _save_backbone(path: str, config, variables) -> str:
    """The backbone part of a model's ``variables`` as a merjax backbone file."""
    backbone = {collection: tree["backbone"] for collection, tree in variables.items() if "backbone" in tree}
    backbone_weights.save_backbone(path, jax.device_get(backbone),
                                   {"backbone": backbone_weights.architecture(config.model.backbone)})
    return path


@pytest.fixture
def tiny_probe(tiny_data_dir):
    """The smoke preset's config (tiny data, ResNet (1,1,1,1) at width 4, 32²), its model, the clips' first
    frames and the model's random initialisation (seed 0)."""
    config = feature_probe.probe_config(feature_probe.parse_args(["--preset", "smoke", "--data_dir", tiny_data_dir]))
    clip_set = cv.load_clip_set(config)
    model = registry.create_model(config.model, clip_set.num_classes)
    first = feature_probe.key_frames(clip_set)[0]
    return config, model, first, feature_probe.random_variables(model, jax.random.key(config.seed), first[:1])


def test_the_table_has_a_row_per_weights_and_endpoint_and_a_file_of_the_random_init_scores_the_same(
        tiny_data_dir, tiny_probe, tmp_path, capsys) -> None:
    config, _, _, initial = tiny_probe
    path = _save_backbone(str(tmp_path / "init.msgpack"), config, initial)
    feature_probe.main(["--preset", "smoke", "--data_dir", tiny_data_dir, "--weights", "random", path,
                        "--endpoints", "layer3", "pooled"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| ") and not line.startswith("| weights")]
    assert [(row[0], row[2]) for row in rows] == [("| random", "layer3"), ("| random", "pooled"),
                                                  (f"| {path}", "layer3"), (f"| {path}", "pooled")]
    assert all(row[1] == "32²" and int(row[3]) > 0 for row in rows)
    uf1, accuracy = [float(row[4]) for row in rows], [float(row[5].rstrip(" |")) for row in rows]
    assert all(0.0 <= value <= 1.0 for value in uf1 + accuracy)
    assert uf1[:2] == uf1[2:]   # the file holds the random init: the same features, the same probe
    assert f"{path}: {path}" in lines


def test_weights_from_a_file_replace_the_random_backbone(tiny_probe, tmp_path) -> None:
    config, model, first, initial = tiny_probe
    other = jax.tree.map(lambda value: value * 1.5, initial)
    path = _save_backbone(str(tmp_path / "other.msgpack"), config, other)
    loaded = feature_probe.with_weights(feature_probe.weights_config(config, path), initial)
    features = [feature_probe.endpoint_features(model, variables, first, "pooled")
                for variables in (loaded, other, initial)]
    np.testing.assert_array_equal(features[0], features[1])
    assert not np.allclose(features[0], features[2])


def test_an_unknown_endpoint_or_a_missing_file_is_one_line(tiny_data_dir, tmp_path, capsys) -> None:
    for flags, expected in ((["--endpoints", "layer9"], "--endpoints layer9: not an endpoint"),
                            (["--weights", str(tmp_path / "missing.msgpack")], "missing.msgpack")):
        with pytest.raises(SystemExit) as exit_info:
            feature_probe.main(["--preset", "smoke", "--data_dir", tiny_data_dir, *flags])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and expected in error and "\n" not in error
