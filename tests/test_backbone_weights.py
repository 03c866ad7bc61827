"""``model.weights``: a VGGFace2 file lands in a classifier's ``resnet`` backbone through the registry,
and nothing else changes."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from merjax.errors import UserError
from merjax.models import create_model, import_backbone_weights
from merjax.weights import resnet_variables_from_state_dict
from tests import torch_reference as ref
from tests.conftest import tiny_model_config


def _zeros_like_init(config, num_classes: int = 3):
    """The classifier's variables as zeros, from shapes only (no full ResNet-50 compile)."""
    model = create_model(config, num_classes)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.uint8))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    torch_model = ref.randomize_(ref.ResNet((3, 4, 6, 3), width=64, num_classes=8631), seed=11)
    state = {k: v.numpy().copy() for k, v in torch_model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("weights") / "resnet50_ft_weight.pkl"
    path.write_bytes(pickle.dumps(state))
    return str(path), state


def _published_config(se_reduction: int = 0):
    config = tiny_model_config("frame_classifier")
    config.backbone.stage_sizes = (3, 4, 6, 3)
    config.backbone.width = 64
    config.backbone.se_reduction = se_reduction
    return config


def test_weights_fill_the_backbone_and_leave_the_head(resnet50_file):
    path, state = resnet50_file
    config = _published_config()
    variables = _zeros_like_init(config)
    loaded = import_backbone_weights(config, variables, path)
    expected = resnet_variables_from_state_dict(state, include_fc=False)
    for collection in ("params", "batch_stats"):
        got, want = flatten_dict(loaded[collection]["backbone"]), flatten_dict(expected[collection])
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
    assert np.abs(loaded["params"]["backbone"]["layer3_4"]["conv2"]["kernel"]).sum() > 0
    for key, value in flatten_dict(loaded["params"]["head"]).items():
        np.testing.assert_array_equal(value, flatten_dict(variables["params"]["head"])[key])


def test_weights_for_another_backbone_are_refused_with_the_reason(resnet50_file):
    path, _ = resnet50_file
    tiny = tiny_model_config("frame_classifier")
    with pytest.raises(UserError, match=r"resnet50_ft_weight\.pkl: VGGFace2 resnet50 does not fit.*width=64"):
        import_backbone_weights(tiny, _zeros_like_init(tiny), path)
    se_config = _published_config(se_reduction=16)
    with pytest.raises(ValueError, match="senet50 weight file lacks"):
        import_backbone_weights(se_config, _zeros_like_init(se_config), path)
