"""Seed 002's region CNNs and region LSTMs: shapes, the parameter count, masking, the two input paths, freezing,
dropout, and the region CNN against a PyTorch reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import traverse_util

from merjax.errors import UserError
from merjax.faces.regions import get_template
from merjax.models import RegionClipClassifier, RegionFrameClassifier, create_model, region
from merjax.train import losses, optim
from tests.parity import assert_close

REGIONS = get_template("seed002").regions
STREAMS = tuple(f"region_{name}" for name in REGIONS)
# Tiny crops (height, width) of different, mostly odd sizes: the 'same' pools keep an odd last row/column.
SIZES = dict(zip(STREAMS, [(7, 9), (7, 9), (8, 10), (6, 6), (5, 7), (5, 12)]))
BATCH, STEPS, CLASSES, REGION_CLASSES = 3, 5, 3, 4
LENGTHS = np.array([5, 2, 4], np.int32)
MASK = np.arange(STEPS)[None, :] < LENGTHS[:, None]
FEATURES, LSTM_HIDDEN = 5, 6
TARGET = "region_labels_emotion"      # the region model's output: the name of its target in merjax.data.targets


def _config(name: str, **overrides) -> ml_collections.ConfigDict:
    """A tiny model config (the architecture the seed's, the widths of the dense and recurrent layers small)."""
    config = {"name": name, "dtype": "float32", "template": "seed002",
              "cnn": {"hidden": 16, "features": FEATURES, "dropout": 0.2},
              "lstm": {"hidden": LSTM_HIDDEN, "dropout": 0.2}, "head": {"hidden": 8, "leaky_slope": 0.3}}
    config.update(overrides)
    return ml_collections.ConfigDict(config)


def _crops(leading: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 256, (*leading, *size, 3), np.uint8) for name, size in SIZES.items()}


def _random_variables(model, seed: int = 0, **inputs):
    """Random values in the shapes of ``model.init`` (kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1²)), without
    JAX's RNG, which is slow to compile for six networks."""
    template = jax.eval_shape(lambda x: model.init(jax.random.key(0), train=False, **x), inputs)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        scale = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if path[-1].key == "kernel" else 0.1
        return jnp.asarray(scale * rng.normal(size=leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, template)


def _jit(model):
    return jax.jit(model.apply, static_argnames=("train", "method"))


@pytest.fixture(scope="module")
def frame_model():
    model = create_model(_config("region_cnn"), REGION_CLASSES)
    return model, _random_variables(model, **_crops((BATCH,))), _jit(model)


@pytest.fixture(scope="module")
def clip_model():
    model = create_model(_config("region_lstm"), CLASSES, frozen_until="features")
    return model, _random_variables(model, mask=MASK, **_crops((BATCH, STEPS))), _jit(model)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# --------------------------------------------------------------------------- #
# The parameter count.
# --------------------------------------------------------------------------- #

def _conv(size: int, inputs: int, outputs: int) -> int:
    return size * size * inputs * outputs + outputs


def _dense(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def _seed_count(channels: int) -> dict[str, int]:
    """Seed 002 §4.1.2 counted by hand: six CNNs (4-way region heads), six LSTM(120) on 20-d, dense 64, dense 3."""
    cnn = (_conv(5, channels, 4) + _conv(3, 4, 8) + sum(_conv(k, 8, 16) for k in (1, 3, 5, 7))
           + _dense(8 + 4 * 16, 1024) + _dense(1024, 20))
    lstm = 4 * (120 * (20 + 120) + 120)        # Keras LSTM: kernel, recurrent kernel, one bias per gate
    return {"region_cnns": 6 * cnn, "region_heads": 6 * _dense(20, 4), "region_lstms": 6 * lstm,
            "fc": _dense(6 * 120, 64) + _dense(64, 3)}


def test_parameter_count_is_the_seeds_with_four_input_channels():
    """Both stages at the seed's crop sizes: 1,092,931 on RGB crops; the seed's 1,093,531 is the same networks
    with a 4-channel first convolution (600 = 6 regions x 5x5x1x4 weights)."""
    seed_sizes = ml_collections.ConfigDict({"dtype": "float32", "template": "seed002"})
    for channels, total in ((3, 1_092_931), (4, region.SEED_PARAMETERS)):
        counts = region.parameter_counts(seed_sizes, CLASSES, REGION_CLASSES, channels=channels)
        expected = _seed_count(channels)
        assert {k: v for k, v in counts.items() if k != "total"} == expected
        assert counts["total"] == sum(expected.values()) == total


def test_parameter_count_does_not_depend_on_the_crop_size():
    """The average pooling is global: crops of 8x8 and 160x60 give networks of one size."""
    model = create_model(_config("region_cnn", cnn={}), REGION_CLASSES)
    counts = [_count(jax.eval_shape(lambda x: model.init(jax.random.key(0), train=False, **x),
                                    {name: jax.ShapeDtypeStruct((1, h, w, 3), jnp.uint8) for name in STREAMS}))
              for h, w in ((8, 8), (60, 160))]
    assert counts[0] == counts[1] == 6 * (_seed_count(3)["region_cnns"] // 6 + _dense(20, REGION_CLASSES))


# --------------------------------------------------------------------------- #
# Shapes and the two input paths of stage 2.
# --------------------------------------------------------------------------- #

def test_output_shapes(frame_model, clip_model):
    model, variables, apply = frame_model
    assert isinstance(model, RegionFrameClassifier)
    outputs = apply(variables, train=False, **_crops((BATCH,)))
    assert list(outputs) == [TARGET] and outputs[TARGET].shape == (BATCH, 6, REGION_CLASSES)
    model, variables, apply = clip_model
    assert isinstance(model, RegionClipClassifier)
    assert apply(variables, MASK, train=False, **_crops((BATCH, STEPS))).shape == (BATCH, CLASSES)


def test_region_logits_meet_region_targets_in_the_loss(frame_model):
    """Logits [B,6,C] and region targets [B,6] with per-column class weights [B,6]: the focal loss is the mean of
    the six regions' losses, each taken alone on its [B] column (six networks trained as if separately)."""
    _, variables, apply = frame_model
    logits = apply(variables, train=False, **_crops((BATCH,)))[TARGET]
    targets = np.array([[0, 3, 3, 1, 3, 2], [3, 3, 2, 3, 1, 0], [1, 0, 3, 3, 3, 3]], np.int32)
    table = np.random.default_rng(7).uniform(0.5, 2.0, (6, REGION_CLASSES)).astype(np.float32)  # [R,C]
    weights = losses.sample_weights(targets, table)
    assert weights.shape == targets.shape
    objective = losses.make_loss({"name": "focal", "gamma": 2.0})
    total, _ = objective({TARGET: logits}, {"targets": {TARGET: targets}, "weights": {TARGET: weights},
                                            "masks": {TARGET: np.ones(targets.shape, bool)}})
    per_region = [losses.focal(logits[:, r], targets[:, r], weights=weights[:, r], gamma=2.0) for r in range(6)]
    assert_close(total, np.mean(per_region), rtol=1e-6)


def test_stage_two_reads_stage_one_features(frame_model, clip_model):
    """Stage 2 starting from stage 1's ``backbone`` gives the same logits on the crops as on stage 1's
    non-negative ``frame_features`` [N,6,D] cached per frame (``input_endpoint='features'``)."""
    _, stage1_variables, stage1_apply = frame_model
    _, stage2_variables, stage2_apply = clip_model
    variables = {"params": {**stage2_variables["params"], "backbone": stage1_variables["params"]["backbone"]}}
    crops = _crops((BATCH, STEPS), seed=1)
    flat = {name: crop.reshape((-1, *crop.shape[2:])) for name, crop in crops.items()}
    cached = stage1_apply(stage1_variables, **flat, method="frame_features")
    assert cached.shape == (BATCH * STEPS, 6, FEATURES) and cached.dtype == jnp.float32
    assert np.all(np.asarray(cached) >= 0)            # ReLU on the spatial features, as in the seed
    on_crops = stage2_apply(variables, MASK, train=False, **crops)
    features_model = create_model(_config("region_lstm"), CLASSES, input_endpoint="features")
    on_cache = features_model.apply(variables, MASK, features=cached.reshape(BATCH, STEPS, 6, FEATURES),
                                    train=False)
    assert_close(on_cache, on_crops, rtol=1e-6)


# --------------------------------------------------------------------------- #
# Masking: padded clips equal unpadded ones.
# --------------------------------------------------------------------------- #

def test_masked_lstms_on_padded_clips_equal_unpadded_clips(clip_model):
    """Features padded to STEPS (with the seed's zeros, or with garbage) give each clip the logits of the clip run
    alone at its own length; reading past the zeros, as the seed's unmasked LSTM does, gives other logits."""
    model, variables, _ = clip_model
    apply = _jit(model.clone(input_endpoint="features"))
    rng = np.random.default_rng(2)
    features = rng.uniform(0, 2, (BATCH, STEPS, 6, FEATURES)).astype(np.float32)
    padded = MASK[:, :, None, None]
    with_zeros = np.where(padded, features, 0).astype(np.float32)
    with_garbage = np.where(padded, features, 1e3 * rng.normal(size=features.shape)).astype(np.float32)
    alone = np.concatenate([apply(variables, np.ones((1, n), bool), features=features[i:i + 1, :n], train=False)
                            for i, n in enumerate(LENGTHS)])
    assert_close(apply(variables, MASK, features=with_zeros, train=False), alone, rtol=1e-5)
    assert_close(apply(variables, MASK, features=with_garbage, train=False), alone, rtol=1e-5)
    unmasked = apply(variables, np.ones_like(MASK), features=with_zeros, train=False)
    assert np.abs(np.asarray(unmasked)[1:] - alone[1:]).max() > 1e-3      # the clips shorter than STEPS


# --------------------------------------------------------------------------- #
# Dropout and freezing.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("stage", ["frame", "clip"])
def test_dropout_only_in_training(stage, frame_model, clip_model):
    """Evaluation ignores the dropout key; training draws from it (the CNNs' dropout in stage 1, the LSTMs' in
    stage 2, here on cached features: its CNNs are frozen)."""
    if stage == "frame":
        model, variables, _ = frame_model
        inputs = _crops((BATCH,))
    else:
        model, variables, _ = clip_model
        model = model.clone(input_endpoint="features")
        inputs = {"mask": MASK, "features": np.random.default_rng(6).uniform(0, 2, (BATCH, STEPS, 6, FEATURES))}
    apply = _jit(model)

    def outputs(train: bool, seed: int) -> np.ndarray:
        result = apply(variables, **inputs, train=train, rngs={"dropout": jax.random.key(seed)})
        return np.asarray(jax.tree_util.tree_leaves(result)[0])

    np.testing.assert_array_equal(outputs(False, 0), outputs(False, 1))
    assert np.abs(outputs(True, 0) - outputs(True, 1)).max() > 1e-6


def test_frozen_cnns_get_no_gradient_and_no_dropout(clip_model):
    """``frozen_until='features'`` (the seed's stage 2 on saved features): the CNNs run in eval mode, their
    gradient is zero, the LSTMs' is not, and ``optim.frozen_mask`` marks exactly the CNNs."""
    model, variables, apply = clip_model
    crops = _crops((BATCH, STEPS))
    rngs = {"dropout": jax.random.key(3)}
    np.testing.assert_array_equal(apply(variables, crops, train=True, rngs=rngs, method="encode"),
                                  apply(variables, crops, train=False, method="encode"))

    @jax.jit
    def grad(params):
        return jax.grad(lambda p: jnp.sum(model.apply({"params": p}, MASK, **crops, train=True, rngs=rngs) ** 2))(
            params)

    grads = traverse_util.flatten_dict(grad(variables["params"]))
    assert all(np.all(np.asarray(g) == 0) for path, g in grads.items() if path[0] == "backbone")
    assert all(np.abs(np.asarray(g)).max() > 0 for path, g in grads.items() if path[0] == "lstms")
    frozen = traverse_util.flatten_dict(optim.frozen_mask(variables["params"], "features", model.backbone))
    assert {path for path, is_frozen in frozen.items() if is_frozen} == {p for p in grads if p[0] == "backbone"}


# --------------------------------------------------------------------------- #
# The region CNN against PyTorch.
# --------------------------------------------------------------------------- #

class TorchRegionCNN(torch.nn.Module):
    """Seed 002's region CNN written in PyTorch: 'same' convolutions, 2x2/2 max-pools with ceil_mode, the pooled
    second convolution first in the concatenation, global average, ReLU everywhere but the classifier."""

    def __init__(self, hidden: int, features: int, classes: int, channels: int = 3):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, 4, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.branches = torch.nn.ModuleList(torch.nn.Conv2d(8, 16, k, padding=k // 2) for k in (1, 3, 5, 7))
        self.pool = torch.nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc1, self.fc2 = torch.nn.Linear(72, hidden), torch.nn.Linear(hidden, features)
        self.dropout = torch.nn.Dropout(0.2)
        self.head = torch.nn.Linear(features, classes)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        relu = torch.relu
        x = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = self.pool(relu(self.conv1(x)))
        x = self.pool(relu(self.conv2(x)))
        x = torch.cat([x] + [relu(branch(x)) for branch in self.branches], dim=1).mean(dim=(2, 3))
        features = relu(self.fc2(self.dropout(relu(self.fc1(x)))))
        return features, self.head(features)

    def load_flax(self, cnn: dict, head: dict) -> "TorchRegionCNN":
        """Copies one region's Flax params (conv kernels HWIO -> OIHW, dense kernels transposed)."""
        convs = [("conv1", self.conv1), ("conv2", self.conv2)] + [
            (f"conv3_{k}x{k}", branch) for k, branch in zip((1, 3, 5, 7), self.branches)]
        pairs = [(cnn[name], layer, (3, 2, 0, 1)) for name, layer in convs] + [
            (params, layer, (1, 0)) for params, layer in ((cnn["fc1"], self.fc1), (cnn["fc2"], self.fc2),
                                                          (head, self.head))]
        with torch.no_grad():
            for params, layer, order in pairs:
                layer.weight.copy_(torch.from_numpy(np.asarray(params["kernel"]).transpose(order).copy()))
                layer.bias.copy_(torch.from_numpy(np.array(params["bias"])))
        return self.eval()


def test_region_cnn_matches_torch():
    """Every region's features and logits equal the PyTorch reference with the same weights (the seed's widths)."""
    model = create_model(_config("region_cnn", cnn={}), REGION_CLASSES)
    crops = _crops((BATCH,), seed=4)
    params = _random_variables(model, seed=5, **crops)["params"]
    features, logits = jax.jit(lambda p, x: model.apply(
        {"params": p}, method=lambda m, **x: (m.frame_features(**x), m(train=False, **x)[TARGET]), **x))(
        params, crops)
    for index, (name, stream) in enumerate(zip(REGIONS, STREAMS)):
        reference = TorchRegionCNN(1024, 20, REGION_CLASSES).load_flax(params["backbone"][name], params[f"head_{name}"])
        with torch.no_grad():
            expected_features, expected_logits = reference(torch.from_numpy(crops[stream]))
        assert_close(features[:, index], expected_features.numpy(), rtol=1e-5)
        assert_close(logits[:, index], expected_logits.numpy(), rtol=1e-5)


# --------------------------------------------------------------------------- #
# Bad input.
# --------------------------------------------------------------------------- #

def test_bad_inputs_and_configs_are_named(frame_model, clip_model):
    model, variables, _ = frame_model
    crops = _crops((BATCH,))
    with pytest.raises(ValueError, match="region_mouth"):
        model.apply(variables, train=False, **{k: v for k, v in crops.items() if k != "region_mouth"})
    with pytest.raises(ValueError, match="takes the region streams"):
        model.apply(variables, train=False, frames=crops["region_nose"], **crops)
    model, variables, _ = clip_model
    with pytest.raises(ValueError, match="needs `mask`"):
        model.apply(variables, train=False, **_crops((BATCH, STEPS)))
    with pytest.raises(ValueError, match="not `features`"):
        model.apply(variables, MASK, features=np.zeros((BATCH, STEPS, 6, FEATURES), np.float32), train=False,
                    **_crops((BATCH, STEPS)))
    with pytest.raises(ValueError, match="takes `features`"):
        model.clone(input_endpoint="features").apply(variables, MASK, train=False, **_crops((BATCH, STEPS)))
    with pytest.raises(ValueError, match="cannot freeze until 'fc1'"):
        create_model(_config("region_lstm"), CLASSES, frozen_until="fc1")
    with pytest.raises(ValueError, match="region_cnn takes region crops only"):
        create_model(_config("region_cnn"), REGION_CLASSES, input_endpoint="features")
    with pytest.raises(UserError, match="unknown face region template 'seed009'"):
        create_model(_config("region_cnn", template="seed009"), REGION_CLASSES)
    with pytest.raises(UserError, match="--config.model.dtype='float16'"):
        create_model(_config("region_lstm", dtype="float16"), CLASSES)
