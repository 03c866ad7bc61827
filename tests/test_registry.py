"""Models and backbones by name; any backbone that follows the interface works with the engine's pieces.

A toy backbone registered here (two strided convolutions and a global average;
endpoints ``block1``, ``block2``, ``pooled``; pixels scaled to [-0.5, 0.5]) runs
through everything ResNet does: the classifiers, ``frame_features``, the frozen
prefix mask and cache, Grad-CAM and weight import. Expected values are
computed by hand from its parameters, not by the code under test.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from merjax.errors import UserError
from merjax.interpret import gradcam, spatial_endpoints
from merjax.models import registry
from merjax.models.backbones import run_stages
from merjax.train import optim
from tests.parity import assert_close, random_frames

SIZE, CLASSES, WIDTH = 16, 3, 4


class ToyCNN(nn.Module):
    """conv 3x3/2 + ReLU (``block1``) -> conv 3x3/2 + ReLU (``block2``) -> global average (``pooled``)."""

    width: int = WIDTH
    frozen_until: str | None = None
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.block1 = nn.Conv(self.width, (3, 3), strides=2, dtype=self.dtype)
        self.block2 = nn.Conv(2 * self.width, (3, 3), strides=2, dtype=self.dtype)

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        return ("block1", "block2", "pooled")

    @property
    def spatial_endpoint_names(self) -> tuple[str, ...]:
        return ("block1", "block2")

    @nn.nowrap
    def preprocess(self, frames: jax.Array) -> jax.Array:
        return jnp.asarray(frames, jnp.float32) / 255.0 - 0.5

    @nn.nowrap
    def endpoint_of_param(self, path: tuple[str, ...]) -> str:
        return path[0]

    def __call__(self, x, *, train, start_at=None, stop_at=None):
        stages = [("block1", lambda x, train: nn.relu(self.block1(x))),
                  ("block2", lambda x, train: nn.relu(self.block2(x))),
                  ("pooled", lambda x, train: jnp.mean(x, axis=(1, 2)))]
        return run_stages(stages, x, train=train, start_at=start_at, stop_at=stop_at,
                          frozen_until=self.frozen_until, dtype=self.dtype)


def import_toy_weights(variables, path, config):
    """The toy's importer: params from an .npz keyed 'block1/kernel', ...; the shapes must fit."""
    with np.load(path) as stored:
        params = traverse_util.unflatten_dict({tuple(k.split("/")): stored[k] for k in stored.files}, sep=None)
    if jax.tree.map(np.shape, params) != jax.tree.map(np.shape, variables["params"]):
        raise UserError(f"{path}: does not fit the toy backbone of width {config.width}")
    return {"params": params}


def build_toy(config, *, dtype, frozen_until):
    return ToyCNN(width=config.width, dtype=dtype, frozen_until=frozen_until)


@pytest.fixture
def toy(monkeypatch):
    """The toy registered as ``config.model.backbone.name='toy'`` (and one without an importer) for one test."""
    monkeypatch.setitem(registry.BACKBONES, "toy", registry.BackboneEntry(build_toy, import_toy_weights))
    monkeypatch.setitem(registry.BACKBONES, "toy_no_weights", registry.BackboneEntry(build_toy))


def _config(name: str = "frame_classifier", backbone: str = "toy") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "name": name, "dtype": "float32", "backbone": {"name": backbone, "width": WIDTH},
        "temporal": {"kind": "bilstm", "hidden": 5, "layers": 1, "dropout": 0.0},
        "head": {"hidden": (), "dropout": 0.0}})


def _init(model, *inputs):
    """Random variables in the shapes of ``model.init`` (numpy's RNG: no compile of JAX's initialisers)."""
    template = jax.eval_shape(lambda *x: model.init(jax.random.key(0), *x, train=False), *inputs)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda leaf: jnp.asarray(0.3 * rng.normal(size=leaf.shape), leaf.dtype), template)


def _conv(x, params, stride=2):
    """nn.Conv 3x3 with SAME padding, by hand."""
    y = jax.lax.conv_general_dilated(x, params["kernel"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + params["bias"]


def _by_hand(params, frames):
    """The toy frame classifier's endpoints and logits from its parameters."""
    block1 = jax.nn.relu(_conv(jnp.asarray(frames, jnp.float32) / 255.0 - 0.5, params["backbone"]["block1"]))

    def logits_of_block1(a):
        pooled = jnp.mean(jax.nn.relu(_conv(a, params["backbone"]["block2"])), axis=(1, 2))
        return pooled @ params["head"]["fc1"]["kernel"] + params["head"]["fc1"]["bias"]

    return block1, logits_of_block1


def test_unknown_names_name_the_flag_and_the_choices():
    with pytest.raises(UserError, match=r"--config.model.name='vgg_lstm': must be one of \('frame_classifier', "
                                        r"'clip_classifier'"):
        registry.create_model(_config("vgg_lstm", "resnet"), CLASSES)
    with pytest.raises(UserError, match=r"--config.model.backbone.name='toy': must be one of \('resnet'"):
        registry.create_model(_config(backbone="toy"), CLASSES)
    with pytest.raises(UserError, match=r"--config.model.backbone.name=None"):
        registry.backbone_endpoints(ml_collections.ConfigDict({"dtype": "float32", "backbone": {"width": 4}}))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_backbone("resnet")(build_toy)


def test_a_registered_backbone_is_built_by_name(toy):
    config = _config()
    assert registry.backbone_endpoints(config) == ("block1", "block2", "pooled")
    backbone = registry.create_backbone(config, frozen_until="block1")
    assert isinstance(backbone, ToyCNN) and backbone.frozen_until == "block1"
    assert "toy" in registry.BACKBONES and "resnet" in registry.BACKBONES
    with pytest.raises(ValueError, match=r"cannot freeze until 'layer2': not an endpoint of the 'toy' backbone"):
        registry.create_model(config, CLASSES, frozen_until="layer2")


def test_toy_frame_classifier_features_freezing_and_gradcam(toy):
    config = _config()
    model = registry.create_model(config, CLASSES)
    frames = random_frames((3, SIZE, SIZE, 3), seed=1)
    variables = _init(model, frames)
    params = variables["params"]
    block1, logits_of_block1 = _by_hand(params, frames)

    features = model.apply(variables, frames, "block1", method="frame_features")
    assert features.shape == (3, SIZE // 2, SIZE // 2, WIDTH)
    assert_close(features, block1, rtol=1e-5)
    assert_close(model.apply(variables, frames, train=False), logits_of_block1(block1), rtol=1e-5)
    suffix = registry.create_model(config, CLASSES, input_endpoint="block1")
    assert_close(suffix.apply(variables, features=features, train=False), logits_of_block1(block1), rtol=1e-5)

    mask = traverse_util.flatten_dict(optim.frozen_mask(params, "block1", model.backbone))
    assert {path for path, frozen in mask.items() if frozen} == {("backbone", "block1", "kernel"),
                                                                 ("backbone", "block1", "bias")}
    assert len(mask) == 6

    assert spatial_endpoints(model) == ("block1", "block2")
    target = np.array([0, 2, 1])
    result = gradcam(model, variables, {"frames": frames}, "block1", target)
    grads = jax.grad(lambda a: jnp.sum(logits_of_block1(a)[np.arange(3), target]))(block1)
    expected = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", block1, grads.mean(axis=(1, 2))))
    assert float(expected.max()) > 0
    assert_close(result.maps, expected, rtol=1e-5)
    np.testing.assert_array_equal(result.target, target)


def test_toy_clip_classifier_through_the_prefix_cache(toy):
    from merjax.train import prefix_cache
    from tests.conftest import make_clip_set

    clip_set = make_clip_set(num_subjects=1, clips_per_class=1, size=SIZE, min_length=4, max_length=4)
    config = _config("clip_classifier")
    model = registry.create_model(config, clip_set.num_classes, frozen_until="block2")
    frames = np.stack(clip_set.frames)
    mask = np.ones(frames.shape[:2], bool)
    variables = _init(model, frames, mask)
    cache = prefix_cache.build_prefix_cache(model, variables, clip_set, "block2", batch_size=5, dtype=np.float32)
    features = np.stack(cache.clip_set.streams["features"])
    assert features.shape == (len(clip_set), 4, SIZE // 4, SIZE // 4, 2 * WIDTH)
    suffix = registry.create_model(config, clip_set.num_classes, frozen_until="block2", input_endpoint="block2")
    assert_close(suffix.apply(variables, features=features, mask=mask, train=False),
                 model.apply(variables, frames, mask, train=False), rtol=1e-5)
    maps = gradcam(model, variables, {"frames": frames, "mask": mask}, "block2").maps
    assert maps.shape == (len(clip_set), 4, SIZE // 4, SIZE // 4)


def test_weights_are_imported_through_the_backbones_importer(toy, tmp_path):
    config = _config()
    model = registry.create_model(config, CLASSES)
    variables = _init(model, random_frames((1, SIZE, SIZE, 3)))
    published = jax.tree.map(lambda x: np.full(x.shape, 0.25, x.dtype), variables["params"]["backbone"])
    path = tmp_path / "toy.npz"
    np.savez(path, **{"/".join(k): v for k, v in traverse_util.flatten_dict(published).items()})

    loaded = registry.import_backbone_weights(config, variables, str(path))
    jax.tree.map(np.testing.assert_array_equal, loaded["params"]["backbone"], published)
    jax.tree.map(np.testing.assert_array_equal, loaded["params"]["head"], variables["params"]["head"])

    wide = _config()
    wide.backbone.width = 2 * WIDTH
    wide_variables = _init(registry.create_model(wide, CLASSES), random_frames((1, SIZE, SIZE, 3)))
    with pytest.raises(UserError, match="toy.npz: does not fit the toy backbone of width 8"):
        registry.import_backbone_weights(wide, wide_variables, str(path))
    with pytest.raises(UserError, match=r"--config.model.weights='.*toy.npz': the 'toy_no_weights' backbone has "
                                        r"no weight importer"):
        registry.import_backbone_weights(_config(backbone="toy_no_weights"), variables, str(path))


def test_gradcam_of_a_bare_backbone_without_logits_is_refused(toy):
    backbone = registry.create_backbone(_config())
    assert spatial_endpoints(backbone) == ("block1", "block2")
    with pytest.raises(ValueError, match="needs its classifier: a 'logits' endpoint"):
        gradcam(backbone, {}, {"frames": np.zeros((1, SIZE, SIZE, 3))}, "block1")
