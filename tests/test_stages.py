"""Stages: resolving a run's stages from the config, and handing parameters from one stage to the next."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from experiments import stages
from experiments.configs import smic_bilstm
from merjax.errors import UserError


def _config(stage_overrides):
    config = smic_bilstm.get_config("smoke")
    config.stages = ml_collections.ConfigDict(stage_overrides)
    config.stage_order = tuple(stage_overrides)
    return config


def test_no_stages_is_one_main_stage_of_the_config_itself():
    config = smic_bilstm.get_config("smoke")
    (stage,) = stages.resolve(config)
    assert stage.name == "main" and stage.config is config and stage.scope == "fold"


def test_exp1_encoder_preset_makes_two_stages_with_their_own_settings():
    config = smic_bilstm.get_config("smoke+exp1_encoder")
    first, second = stages.resolve(config)
    assert (first.name, second.name) == ("exp1", "clips")
    assert first.config.model.name == "frame_classifier" and first.config.sampler.name == "frames"
    assert first.config.sampler.balance_per_class == 16
    assert second.config.model.name == "clip_classifier" and second.config.sampler.name == "sliding_windows"
    assert second.init_from == "exp1" and tuple(second.config.init.include) == ("backbone",)
    assert not second.config.stages and second.config.model.temporal.kind == "bilstm"


@pytest.mark.parametrize("overrides, message", [
    ({"a": {"train": {"epochz": 3}}}, r"--config.stages.a.train.epochz: no such key"),
    ({"a": {"init": {"from_stage": "b"}}, "b": {}}, r"from_stage='b': must name an earlier stage"),
    ({"a": {"scope": "everywhere"}}, r"scope='everywhere'"),
    ({"a": {"scope": "run"}}, r"trains once on all clips of synthetic_me/tiny.*other data"),
    ({"a": {}, "b": {"scope": "run", "data": {"name": "synthetic_me/smic_like"}, "init": {"from_stage": "a"}}},
     r"scope 'run' cannot start from the fold stage 'a'"),
])
def test_bad_stages_are_named(overrides, message):
    with pytest.raises(UserError, match=message):
        stages.resolve(_config(overrides))


def test_stage_order_must_list_every_stage():
    config = _config({"a": {}, "b": {}})
    config.stage_order = ("b",)
    with pytest.raises(UserError, match=r"stage_order=\('b',\): must list every stage"):
        stages.resolve(config)


def test_transfer_copies_included_subtrees_and_keeps_the_rest_fresh():
    fresh = {"params": {"backbone": {"conv": {"kernel": np.zeros((2, 2))}}, "head": {"kernel": np.zeros(3)}},
             "batch_stats": {"backbone": {"bn": {"mean": np.zeros(2)}}}}
    earlier = {"params": {"backbone": {"conv": {"kernel": np.ones((2, 2))}}, "head": {"kernel": np.ones(5)}},
               "batch_stats": {"backbone": {"bn": {"mean": np.ones(2)}}}}
    variables, record = stages.transfer(fresh, earlier, ("backbone",), (), "here")
    np.testing.assert_array_equal(variables["params"]["backbone"]["conv"]["kernel"], 1.0)
    np.testing.assert_array_equal(variables["batch_stats"]["backbone"]["bn"]["mean"], 1.0)
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], 0.0)
    assert record == {"copied_parameters": 2, "fresh_subtrees": ["head"]}
    with pytest.raises(UserError, match=r"here: params/head/kernel has shape \(3,\) here and \(5,\)"):
        stages.transfer(fresh, earlier, (), (), "here")
    variables, _ = stages.transfer(fresh, earlier, (), ("head",), "here")
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], 0.0)
    with pytest.raises(UserError, match="copies nothing"):
        stages.transfer(fresh, earlier, ("temporal",), (), "here")
