"""SE-ResNet-50 (VGGFace2 ``senet50_ft``) equals a PyTorch reference; ``load_vggface2`` checks files."""

from __future__ import annotations

import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merjax.models import ResNet, SENet50
from merjax.weights import load_vggface2, resnet_variables_from_state_dict
from tests import torch_reference as ref
from tests.parity import (
    assert_close,
    assert_resnet_matches_torch,
    random_frames,
    resnet_outputs,
    to_nhwc,
    variable_shapes,
)

SE_KEY = re.compile(r"layer\d+\.\d+\.conv[45]\.")


def _save(state: dict[str, np.ndarray], path) -> str:
    """Writes ``state`` as the published weights are: a pickle of a dict of numpy arrays."""
    path.write_bytes(pickle.dumps(state))
    return str(path)


@pytest.fixture(scope="module")
def backbone_state(senet50_state) -> dict[str, np.ndarray]:
    return {k: v for k, v in senet50_state.items() if not k.startswith("fc.")}


@pytest.mark.parametrize("height,width", [(32, 32), (29, 35)])
def test_small_senet_matches_torch_in_eval(height, width):
    torch_model = ref.randomize_(
        ref.ResNet((2, 1, 1, 1), width=8, num_classes=5, se_reduction=16), seed=3).eval()
    model = ResNet(stage_sizes=(2, 1, 1, 1), width=8, num_classes=5, se_reduction=16)
    frames = random_frames((2, height, width, 3))
    variables = resnet_variables_from_state_dict(torch_model.state_dict())
    template = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                              jnp.zeros((1, height, width, 3)))
    assert variable_shapes(variables) == variable_shapes(template)
    assert variables["params"]["layer1_0"]["conv4"]["kernel"].shape == (1, 1, 32, 2)
    assert variables["params"]["layer4_0"]["conv5"]["bias"].shape == (256,)

    logits, endpoints, expected = resnet_outputs(model, variables, torch_model, frames)
    assert set(endpoints) == set(expected)
    for name, value in expected.items():
        assert_close(endpoints[name], to_nhwc(value))
    assert_close(logits, expected["logits"].numpy())


def test_load_vggface2_senet50_matches_torch(senet50_torch, senet50_state, backbone_state, tmp_path):
    assert sum(v.size for v in senet50_state.values()) > 25_000_000
    variables = load_vggface2(_save(senet50_state, tmp_path / "senet50_ft_weight.pkl"), "senet50")
    frames = random_frames((1, 64, 64, 3), seed=5)
    assert_resnet_matches_torch(SENet50(num_classes=8631), variables, senet50_torch, frames)

    # The backbone alone: from the same file (fc dropped) or from a file without fc.
    for state in (senet50_state, backbone_state):
        backbone = load_vggface2(_save(state, tmp_path / "w.pkl"), "senet50", include_fc=False)
        assert "fc" not in backbone["params"]
        jax.tree_util.tree_map(np.testing.assert_array_equal, backbone,
                               {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
                                "batch_stats": variables["batch_stats"]})


def test_load_vggface2_resnet50_file(backbone_state, tmp_path):
    resnet_state = {k: v for k, v in backbone_state.items() if not SE_KEY.match(k)}
    variables = load_vggface2(_save(resnet_state, tmp_path / "r.pkl"), "resnet50", include_fc=False)
    assert "conv4" not in variables["params"]["layer1_0"]
    with pytest.raises(ValueError, match=r"senet50 weight file lacks 64 key\(s\): 'layer1\.0\.conv4\.bias'"):
        load_vggface2(_save(resnet_state, tmp_path / "r.pkl"), "senet50", include_fc=False)
    with pytest.raises(ValueError, match=r"64 key\(s\) not in resnet50: 'layer1\.0\.conv4\.bias'"):
        load_vggface2(_save(backbone_state, tmp_path / "s.pkl"), "resnet50", include_fc=False)


def test_load_vggface2_names_the_bad_key(backbone_state, tmp_path):
    def load(state, include_fc: bool = False):
        return load_vggface2(_save(state, tmp_path / "bad.pkl"), "senet50", include_fc=include_fc)

    missing = {k: v for k, v in backbone_state.items() if k != "layer3.2.conv4.bias"}
    with pytest.raises(ValueError, match=r"lacks 1 key\(s\): 'layer3\.2\.conv4\.bias' "
                                         r"\(params/layer3_2/conv4/bias\)"):
        load(missing)
    with pytest.raises(ValueError, match=r"'fc\.bias' \(params/fc/bias\), 'fc\.weight'"):
        load(backbone_state, include_fc=True)
    extra = {**backbone_state, "layer4.3.conv1.weight": np.zeros((512, 2048, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"1 key\(s\) not in senet50: 'layer4\.3\.conv1\.weight'"):
        load(extra)
    with pytest.raises(ValueError, match=r"'layer2\.1\.se\.weight'"):
        load({**backbone_state, "layer2.1.se.weight": np.zeros((4, 4, 1, 1), np.float32)})
    wrong = {**backbone_state, "layer2.1.conv5.weight": np.zeros((512, 16, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"'layer2\.1\.conv5\.weight' \(params/layer2_1/conv5/kernel\) "
                                         r"has shape \(512, 16, 1, 1\) in the file but senet50 "
                                         r"expects \(512, 32, 1, 1\)"):
        load(wrong)
    with pytest.raises(ValueError, match=r"unknown VGGFace2 arch 'senet101'.*'resnet50', 'senet50'"):
        load_vggface2(tmp_path / "bad.pkl", "senet101")
