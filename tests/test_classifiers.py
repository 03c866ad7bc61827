"""Seed 001's classifiers: shared window encoding, masking, features input, and building them by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from merjax.errors import UserError
from merjax.models import ClipClassifier, FrameClassifier, create_model
from tests import torch_reference as ref

BATCH, STEPS, SIZE, CLASSES = 2, 6, 16, 3
MASK = np.arange(STEPS)[None, :] < np.array([[STEPS], [4]])
WINDOWS = np.array([[[0, 1, 2], [2, 3, 4], [3, 4, 5]],
                    [[0, 1, 2], [1, 2, 3], [3, 4, 5]]], np.int32)  # clip 1's last window is half padding


def _config(name: str = "clip_classifier", temporal: str = "bilstm", dtype: str = "float32"):
    return ml_collections.ConfigDict({
        "name": name,
        "backbone": {"name": "resnet", "stage_sizes": (1, 1), "width": 4},
        "temporal": {"kind": temporal, "hidden": 5, "layers": 2, "dropout": 0.3},
        "head": {"hidden": (8, 6), "dropout": 0.5},
        "dtype": dtype,
    })


def _frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (BATCH, STEPS, SIZE, SIZE, 3), np.uint8)


def _random_variables(model, *args, seed: int = 0):
    """Random values in the shapes of ``model.init``, without JAX's (slow to compile) RNG."""
    template = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a, train=False), *args)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, leaf.shape)
        else:
            value = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, template)
    stem = variables["params"]["backbone"]["conv1"]
    stem["kernel"] = stem["kernel"] / 100.0  # keep [0, 255] inputs from saturating the LSTM
    return variables


_MODELS = {}


def _clip_model(temporal: str):
    """(model, variables, jitted apply), built once per temporal kind."""
    if temporal not in _MODELS:
        model = create_model(_config(temporal=temporal), CLASSES)
        variables = _random_variables(model, _frames(), MASK)
        _MODELS[temporal] = model, variables, jax.jit(model.apply, static_argnames="train")
    return _MODELS[temporal]


@pytest.mark.parametrize("temporal", ["bilstm", "lstm"])
def test_windows_equal_separate_windows(temporal):
    model, variables, apply = _clip_model(temporal)
    assert isinstance(model, ClipClassifier)
    frames = _frames(1)
    logits = apply(variables, frames, MASK, WINDOWS, train=False)
    assert logits.shape == (BATCH, WINDOWS.shape[1], CLASSES)
    separate = np.stack([
        np.stack([apply(variables, frames[b:b + 1, idx], MASK[b:b + 1, idx], train=False)[0]
                  for idx in WINDOWS[b]])
        for b in range(BATCH)])
    np.testing.assert_allclose(np.asarray(logits), separate, rtol=1e-5, atol=1e-5)
    assert not np.allclose(separate[:, 0], separate[:, 1])  # windows do differ


@pytest.mark.parametrize("temporal", ["bilstm", "lstm"])
def test_matches_torch_reference_on_padded_clips(temporal):
    _, _, apply = _clip_model(temporal)
    config = _config(temporal=temporal)
    torch_model = ref.ClipClassifier(
        CLASSES, stage_sizes=config.backbone.stage_sizes, width=config.backbone.width,
        hidden=config.temporal.hidden, layers=1 if temporal == "bilstm" else config.temporal.layers,
        bidirectional=temporal == "bilstm", head=config.head.hidden)
    ref.randomize_(torch_model, seed=5).eval()
    with torch.no_grad():
        torch_model.backbone.conv1.weight /= 100.0  # as in _random_variables
    frames = _frames(5)
    logits = apply(ref.merjax_clip_variables(torch_model), frames, MASK, train=False)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(frames), torch.from_numpy(MASK)).numpy()
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


def test_padded_frames_do_not_change_logits():
    _, variables, apply = _clip_model("bilstm")
    frames = _frames(2)
    other = frames.copy()
    other[~MASK] = _frames(3)[~MASK]
    for windows in (None, WINDOWS):
        expected = apply(variables, frames, MASK, windows, train=False)
        np.testing.assert_array_equal(np.asarray(apply(variables, other, MASK, windows, train=False)),
                                      np.asarray(expected))
    valid_changed = frames.copy()
    valid_changed[1, 3] = _frames(3)[1, 3]
    assert not np.allclose(apply(variables, valid_changed, MASK, train=False)[1],
                           apply(variables, frames, MASK, train=False)[1])


def test_train_step_call_convention():
    model, variables, _ = _clip_model("lstm")
    inputs = {"frames": _frames(4), "mask": MASK, "windows": WINDOWS}
    apply = jax.jit(lambda v, inputs, key: model.apply(
        v, **inputs, train=True, rngs={"dropout": key}, mutable=["batch_stats"]))
    logits, updates = apply(variables, inputs, jax.random.key(0, impl="rbg"))
    assert logits.shape == (BATCH, WINDOWS.shape[1], CLASSES) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    assert jax.tree_util.tree_structure(updates["batch_stats"]) == \
        jax.tree_util.tree_structure(variables["batch_stats"])


def test_frame_classifier_and_bfloat16():
    frames = jnp.zeros((BATCH, SIZE, SIZE, 3), jnp.uint8)
    for dtype in ("float32", "bfloat16"):
        model = create_model(_config(name="frame_classifier", dtype=dtype), CLASSES)
        assert isinstance(model, FrameClassifier)
        logits = jax.eval_shape(
            lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0], frames)
        assert logits.shape == (BATCH, CLASSES) and logits.dtype == jnp.float32


def test_features_input_equals_frames_input():
    """With ``input_endpoint`` the model takes ``features`` (the backbone at that endpoint) and gives the
    same logits as on frames; it refuses frames then, and features without it."""
    model, variables, apply = _clip_model("bilstm")
    frames = _frames(6)
    suffix = create_model(_config(), CLASSES, input_endpoint="layer1")
    flat = frames.reshape((-1, SIZE, SIZE, 3))
    features = model.apply(variables, flat, "layer1", method="frame_features")
    assert features.shape == (BATCH * STEPS, 4, 4, 16)
    features = features.reshape(BATCH, STEPS, *features.shape[1:])
    for windows in (None, WINDOWS):
        np.testing.assert_allclose(suffix.apply(variables, features=features, mask=MASK, windows=windows, train=False),
                                   apply(variables, frames, MASK, windows, train=False), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"input_endpoint='layer1'\) takes `features` only, got frames"):
        suffix.apply(variables, frames, MASK, train=False)
    with pytest.raises(ValueError, match=r"input_endpoint=None\) takes `frames` only, got frames and features"):
        model.apply(variables, frames, MASK, features=features, train=False)
    with pytest.raises(ValueError, match="takes `frames` only, got neither"):
        model.apply(variables, mask=MASK, train=False)
    with pytest.raises(ValueError, match="needs `mask`"):
        model.apply(variables, frames, train=False)


def test_onset_relative_windows_see_only_the_change_from_their_first_frame():
    """With ``model.onset_relative`` a feature offset shared by a window's frames (the subject's appearance)
    cannot change its logits, and each window's logits are those of its features minus its first frame's;
    without it the offset does change them."""
    model, variables, _ = _clip_model("bilstm")
    config = _config()
    config.onset_relative = True
    relative = create_model(config, CLASSES, input_endpoint="pooled")
    plain = create_model(_config(), CLASSES, input_endpoint="pooled")
    features = model.apply(variables, _frames(3).reshape((-1, SIZE, SIZE, 3)), "pooled", method="frame_features")
    features = features.reshape(BATCH, STEPS, -1)
    offset = jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, 1, features.shape[-1])), jnp.float32)
    for windows in (None, WINDOWS):
        logits = relative.apply(variables, features=features, mask=MASK, windows=windows, train=False)
        shifted = relative.apply(variables, features=features + offset, mask=MASK, windows=windows, train=False)
        np.testing.assert_allclose(shifted, logits, rtol=1e-5, atol=1e-6)
        moved = plain.apply(variables, features=features + offset, mask=MASK, windows=windows, train=False)
        assert np.abs(np.asarray(moved) - np.asarray(plain.apply(variables, features=features, mask=MASK,
                                                                 windows=windows, train=False))).max() > 1e-3
    window_feats = jax.vmap(lambda seq, idx: seq[idx])(features, WINDOWS)[:, 1]       # each clip's 2nd window
    window_mask = jax.vmap(lambda seq, idx: seq[idx])(MASK, WINDOWS)[:, 1]
    expected = plain.apply(variables, window_feats - window_feats[:, :1], window_mask,
                           method=lambda m, f, k: m.classify_features(f, k, train=False))
    np.testing.assert_allclose(relative.apply(variables, features=features, mask=MASK, windows=WINDOWS,
                                              train=False)[:, 1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key,value,message", [
    ("name", "video", r"--config.model.name='video': must be one of \('frame_classifier', 'clip_classifier'"),
    ("backbone.name", "vgg", r"--config.model.backbone.name='vgg': must be one of \('resnet'"),
    ("temporal.kind", "gru", r"--config.model.temporal.kind='gru': must be one of \('lstm', 'bilstm'\)"),
    ("dtype", "float16", r"--config.model.dtype='float16': must be one of \('float32', 'bfloat16'\)"),
])
def test_unknown_names_are_user_errors_naming_the_flag(key, value, message):
    config = _config()
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(UserError, match=message):
        create_model(config, CLASSES)
