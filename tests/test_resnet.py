"""The VGGFace2-variant ResNet equals a PyTorch reference with the same weights."""

from __future__ import annotations

import pickle

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict

from merjax.models import ResNet, ResNet50, vggface2_preprocess
from merjax.models.resnet import Conv3x3
from merjax.weights import load_vggface2
from merjax.weights.state_dict import load_vggface2_pickle, resnet_variables_from_state_dict
from tests import torch_reference as ref
from tests.parity import (
    assert_close,
    assert_resnet_matches_torch,
    random_frames,
    resnet_outputs,
    to_nhwc,
    variable_shapes,
)


def test_vggface2_preprocess_known_pixel():
    rgb = np.array([10, 20, 30], np.uint8).reshape(1, 1, 1, 1, 3)
    expected = np.array([30 - 91.4953, 20 - 103.8827, 10 - 131.0912], np.float32)
    for frames in (rgb, rgb.astype(np.float32)):
        out = vggface2_preprocess(frames)
        assert out.shape == rgb.shape and out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out)[0, 0, 0, 0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("height,width", [(32, 44), (29, 35)])
def test_small_resnet_matches_torch_in_eval(height, width):
    torch_model = ref.randomize_(ref.ResNet((2, 1, 1, 1), width=8, num_classes=5)).eval()
    model = ResNet(stage_sizes=(2, 1, 1, 1), width=8, num_classes=5)
    frames = random_frames((2, height, width, 3))
    variables = resnet_variables_from_state_dict(torch_model.state_dict())
    template = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                              jnp.zeros((1, height, width, 3)))
    assert variable_shapes(variables) == variable_shapes(template)

    logits, endpoints, expected = resnet_outputs(model, variables, torch_model, frames)
    assert list(model.endpoint_names) == list(expected) and set(endpoints) == set(expected)
    for name, value in expected.items():
        assert endpoints[name].shape == to_nhwc(value).shape, name
        assert_close(endpoints[name], to_nhwc(value))
    assert_close(logits, expected["logits"].numpy())


def test_maxpool_uses_ceil_mode():
    """At 32x44 the stem gives 16x22; ceil mode pools that to 8x11, floor mode to 7x10."""
    model = ResNet(stage_sizes=(1,), width=4)
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0],
                         jnp.zeros((1, 32, 44, 3)))
    _, endpoints = out
    assert endpoints["conv1"].shape == (1, 16, 22, 4)
    assert endpoints["pool1"].shape == (1, 8, 11, 4)


def test_resnet50_matches_torch():
    torch_model = ref.randomize_(ref.ResNet((3, 4, 6, 3), width=64, num_classes=7), seed=1).eval()
    model = ResNet50(num_classes=7)
    frames = random_frames((1, 64, 64, 3), seed=1)
    variables = resnet_variables_from_state_dict(torch_model.state_dict())
    assert_resnet_matches_torch(model, variables, torch_model, frames)


def test_resnet50_endpoint_shapes():
    model = ResNet50()
    _, endpoints = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0],
        jnp.zeros((2, 224, 224, 3)))
    assert {k: v.shape for k, v in endpoints.items()} == {
        "conv1": (2, 112, 112, 64),
        "pool1": (2, 56, 56, 64),
        "layer1": (2, 56, 56, 256),
        "layer2": (2, 28, 28, 512),
        "layer3": (2, 14, 14, 1024),
        "layer4": (2, 7, 7, 2048),
        "pooled": (2, 2048),
    }


def test_start_at_and_stop_at_compose_to_the_full_forward():
    model = ResNet(stage_sizes=(1, 1), width=4, num_classes=3)
    x = vggface2_preprocess(random_frames((2, 24, 24, 3)))
    variables = resnet_variables_from_state_dict(
        ref.randomize_(ref.ResNet((1, 1), width=4, num_classes=3)).state_dict())
    full, _ = model.apply(variables, x, train=False)
    mid, prefix = model.apply(variables, x, train=False, stop_at="layer1")
    assert list(prefix) == ["conv1", "pool1", "layer1"] and mid is prefix["layer1"]
    out, suffix = model.apply(variables, mid, train=False, start_at="layer1")
    assert list(suffix) == ["layer1", "layer2", "pooled", "logits"]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(full))
    with pytest.raises(ValueError, match="layer7"):
        model.apply(variables, x, train=False, stop_at="layer7")
    with pytest.raises(ValueError, match="nothing to run"):
        model.apply(variables, x, train=False, start_at="pooled", stop_at="layer2")


def test_backbone_interface_of_resnet():
    """Preprocessing, spatial endpoints and the endpoint of every parameter (what freezing relies on)."""
    model = ResNet(stage_sizes=(2, 1), width=4, num_classes=3)
    frames = random_frames((1, 8, 8, 3))
    np.testing.assert_array_equal(model.preprocess(frames), vggface2_preprocess(frames))
    assert model.spatial_endpoint_names == ("conv1", "pool1", "layer1", "layer2")
    params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jnp.zeros((1, 32, 32, 3)))["params"]
    owners = {path[0]: model.endpoint_of_param(path) for path in flatten_dict(params)}
    assert owners == {"conv1": "conv1", "bn1": "conv1", "layer1_0": "layer1", "layer1_1": "layer1",
                      "layer2_0": "layer2", "fc": "logits"}
    with pytest.raises(ValueError, match="'head' is not a ResNet submodule"):
        model.endpoint_of_param(("head", "kernel"))


def test_train_mode_batchnorm_and_gradients_match_torch():
    torch_model = ref.randomize_(ref.ResNet((2, 1), width=8, num_classes=4), seed=2).train()
    model = ResNet(stage_sizes=(2, 1), width=8, num_classes=4)
    frames = random_frames((3, 30, 30, 3), seed=2)
    weights = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    variables = resnet_variables_from_state_dict(torch_model.state_dict())

    def loss_fn(params):
        logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                      vggface2_preprocess(frames), train=True,
                                      mutable=["batch_stats"])
        return jnp.sum(logits[0] * weights), (logits[0], updates["batch_stats"])

    grads, (logits, batch_stats) = jax.jit(jax.grad(loss_fn, has_aux=True))(variables["params"])
    torch_logits = torch_model(ref.preprocess(torch.from_numpy(frames)))
    (torch_logits * torch.from_numpy(weights)).sum().backward()

    assert_close(logits, torch_logits.detach().numpy())
    expected = resnet_variables_from_state_dict(torch_model.state_dict())["batch_stats"]
    jax.tree_util.tree_map(lambda a, b: assert_close(a, b, rtol=1e-5), batch_stats, expected)
    assert_close(grads["conv1"]["kernel"], torch_model.conv1.weight.grad.numpy().transpose(2, 3, 1, 0),
           rtol=1e-3)
    assert_close(grads["layer1_1"]["bn2"]["scale"], torch_model.layer1[1].bn2.weight.grad.numpy(),
           rtol=1e-3)
    assert_close(grads["fc"]["kernel"], torch_model.fc.weight.grad.numpy().T, rtol=1e-4)


def test_state_dict_import_options(tmp_path):
    torch_model = ref.ResNet((1,), width=4, num_classes=6)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(state))
    loaded = load_vggface2_pickle(path)
    assert "fc" in resnet_variables_from_state_dict(loaded)["params"]
    backbone = resnet_variables_from_state_dict(loaded, include_fc=False)
    template = jax.eval_shape(
        lambda x: ResNet(stage_sizes=(1,), width=4).init(jax.random.key(0), x, train=False),
        jnp.zeros((1, 16, 16, 3)))
    assert variable_shapes(backbone) == variable_shapes(template)
    with pytest.raises(ValueError, match="layer1.0.se.weight"):
        resnet_variables_from_state_dict({**loaded, "layer1.0.se.weight": np.zeros(3)})


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled unsafely."""

    def __reduce__(self):
        import os
        return (os.system, ("touch should_not_exist",))


def test_weight_pickle_carrying_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": np.zeros((2, 3, 7, 7), np.float32), "x": _RunsCode()}))
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pkl.*refusing to load (posix|os|nt)\.system"):
        load_vggface2_pickle(path)
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pkl.*refusing to load"):   # not relabelled corrupt
        load_vggface2(path, "resnet50")
    assert not (tmp_path / "should_not_exist").exists()


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_weight_pickle_of_arrays_loads_under_every_protocol(tmp_path, protocol):
    state = {"conv1.weight": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "bn1.running_var": np.ones(2)}
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(state, protocol=protocol))
    loaded = load_vggface2_pickle(path)
    assert set(loaded) == set(state)
    for key in state:
        np.testing.assert_array_equal(loaded[key], state[key])



@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_conv3x3_equals_flax_conv_on_every_map_size(size):
    """The im2col path (maps smaller than the kernel) and the convolution path give nn.Conv's result."""
    x = jax.random.normal(jax.random.key(size), (3, size, size + 1, 6))
    ours = Conv3x3(5)
    variables = ours.init(jax.random.key(0), x)
    reference = nn.Conv(5, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)
    expected = reference.apply(variables, x)
    assert_close(ours.apply(variables, x), expected, rtol=1e-5)
    grad = jax.grad(lambda v: jnp.sum(ours.apply(v, x) ** 2))(variables)
    expected_grad = jax.grad(lambda v: jnp.sum(reference.apply(v, x) ** 2))(variables)
    assert_close(grad["params"]["kernel"], expected_grad["params"]["kernel"], rtol=1e-5)
