"""A frozen backbone prefix: no updates, running BatchNorm, and a cache that changes nothing but speed."""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
import pytest
from flax import traverse_util
from ml_collections import ConfigDict

from merjax.data import array_store, batches, samplers
from merjax.models import create_model
from merjax.train import optim, prefix_cache, steps
from merjax.train.losses import cross_entropy, make_loss
from merjax.train.state import create_train_state, init_variables
from tests.conftest import make_clip_set, tiny_model_config

FREEZE = "layer1"          # tiny backbone (1, 1): conv1, pool1, layer1 | layer2, pooled
WINDOW = 4


def _frozen_leaf(path) -> bool:
    return path[0] == "backbone" and (path[1] in ("conv1", "bn1") or path[1].startswith("layer1_"))


@pytest.fixture(scope="module")
def setup():
    clip_set = make_clip_set(num_subjects=2, clips_per_class=1, size=16, min_length=5, max_length=7)
    config = tiny_model_config("clip_classifier")
    model = create_model(config, clip_set.num_classes, frozen_until=FREEZE)
    example = {"frames": np.zeros((2, WINDOW, 16, 16, 3), np.uint8), "mask": np.ones((2, WINDOW), bool)}
    variables = init_variables(model, example, jax.random.key(0))
    # Non-trivial running statistics, so that "BatchNorm on running statistics" is visible.
    variables["batch_stats"] = jax.tree.map(
        lambda x: x + 0.3 * jax.random.uniform(jax.random.key(1), x.shape), variables["batch_stats"])
    return clip_set, config, model, variables


def _windows_batch(clip_set, frames_per_clip, samples):
    rows = []
    for clip, start in samples:
        indices, mask = samplers.window_indices(len(frames_per_clip[clip]), start, WINDOW)
        rows.append((frames_per_clip[clip][indices], mask, clip_set.labels[clip]))
    return {"frames": np.stack([r[0] for r in rows]), "mask": np.stack([r[1] for r in rows]),
            "label": np.asarray([r[2] for r in rows], np.int32)}


def _loss_and_grads(model, variables, batch, frame: bool = False):
    """``batch['frames']`` holds frames, or the cached features of a model with ``input_endpoint``."""
    inputs = {"frames" if model.input_endpoint is None else "features": batch["frames"]}
    if not frame:
        inputs["mask"] = batch["mask"]

    def loss_fn(params):
        logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                      **inputs, train=True,
                                      rngs={"dropout": jax.random.key(7)}, mutable=["batch_stats"])
        return cross_entropy(logits, batch["label"]), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    return loss, grads, updates["batch_stats"]


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float16, 2e-2)])
def test_cached_and_uncached_give_the_same_loss_and_gradients(setup, dtype, rtol):
    clip_set, config, model, variables = setup
    cache = prefix_cache.build_prefix_cache(model, variables, clip_set, FREEZE, batch_size=4, dtype=dtype)
    suffix = create_model(config, clip_set.num_classes, frozen_until=FREEZE, input_endpoint=FREEZE)
    samples = [(0, 0), (1, 2), (3, 1), (5, 3)]       # the last window runs past its clip: padded, masked
    uncached = _windows_batch(clip_set, clip_set.frames, samples)
    cached = _windows_batch(clip_set, cache.clip_set.streams["features"], samples)
    assert cached["frames"].dtype == dtype and cached["frames"].shape[2:] == (4, 4, 16)

    loss, grads, stats = _loss_and_grads(model, variables, uncached)
    cached_loss, cached_grads, cached_stats = _loss_and_grads(suffix, variables, cached)
    np.testing.assert_allclose(cached_loss, loss, rtol=rtol)
    flat, cached_flat = traverse_util.flatten_dict(grads), traverse_util.flatten_dict(cached_grads)
    assert flat.keys() == cached_flat.keys()
    for path, grad in flat.items():
        if _frozen_leaf(path):
            assert not np.any(grad) and not np.any(cached_flat[path]), path
        else:
            scale = float(np.max(np.abs(grad))) + 1e-8
            np.testing.assert_allclose(cached_flat[path], grad, atol=rtol * scale * 10, rtol=rtol,
                                       err_msg=str(path))
    assert any(np.any(g) for p, g in flat.items() if not _frozen_leaf(p))
    # Frozen BatchNorm keeps its running statistics; the suffix's are updated identically.
    for path, value in traverse_util.flatten_dict(stats).items():
        before = traverse_util.flatten_dict(variables["batch_stats"])[path]
        if _frozen_leaf(path):
            np.testing.assert_array_equal(value, before)
        else:
            assert not np.allclose(value, before), path
            np.testing.assert_allclose(traverse_util.flatten_dict(cached_stats)[path], value, rtol=rtol * 10,
                                       atol=1e-6)


def test_frozen_parameters_never_move_even_with_weight_decay(setup):
    clip_set, config, model, variables = setup
    frozen = optim.frozen_mask(variables["params"], FREEZE, model.backbone)
    flat_mask = traverse_util.flatten_dict(frozen)
    assert {p for p, f in flat_mask.items() if f} == {p for p in flat_mask if _frozen_leaf(p)}
    train_config = ConfigDict({"optimizer": "adamw", "learning_rate": 1e-2, "weight_decay": 0.1,
                               "schedule": "constant", "epochs": 1, "grad_clip": 1.0})
    state = create_train_state(model, variables, optim.make_optimizer(train_config, frozen=frozen),
                               jax.random.key(3), steps_per_epoch=3,
                               learning_rate_fn=optim.learning_rate_schedule(train_config))
    windows = _windows_batch(clip_set, clip_set.frames, [(0, 0), (2, 1)])
    batch = {"inputs": {"frames": windows["frames"], "mask": windows["mask"]}, "targets": {"label": windows["label"]},
             "weights": {"label": np.ones(2, np.float32)}, "masks": {"label": np.ones(2, bool)}}
    step = jax.jit(functools.partial(steps.train_step, objective=make_loss({"name": "cross_entropy"})))
    for _ in range(3):
        state, metrics = step(state, batch)
    assert np.isfinite(metrics["loss"])
    before_params = traverse_util.flatten_dict(variables["params"])
    for path, value in traverse_util.flatten_dict(state.params).items():
        if _frozen_leaf(path):
            np.testing.assert_array_equal(value, before_params[path])
        elif path[-1] == "kernel":
            assert not np.allclose(value, before_params[path]), path
    before_stats = traverse_util.flatten_dict(variables["batch_stats"])
    for path, value in traverse_util.flatten_dict(state.batch_stats).items():
        if _frozen_leaf(path):
            np.testing.assert_array_equal(value, before_stats[path])


def test_frozen_mask_rejects_an_unknown_endpoint(setup):
    _, _, model, variables = setup
    with pytest.raises(ValueError, match="layer9"):
        optim.frozen_mask(variables["params"], "layer9", model.backbone)


def test_cache_versions_memory_and_disk(setup, tmp_path):
    clip_set, _, model, variables = setup
    augmentation = batches.Augmentation(flip_prob=0.5, max_rotation=10.0)
    kwargs = dict(batch_size=3, variants=3, augmentation=augmentation, seed=5, dtype=np.float32)
    memory = prefix_cache.build_prefix_cache(model, variables, clip_set, FREEZE, **kwargs)
    disk = prefix_cache.build_prefix_cache(model, variables, clip_set, FREEZE,
                                           max_memory_bytes=0, directory=str(tmp_path / "cache"), **kwargs)
    assert memory.location == "memory" and disk.location == str(tmp_path / "cache")
    assert isinstance(disk.variants[0], np.memmap) and not disk.variants[0].flags.writeable
    assert array_store.open(str(tmp_path / "cache"), "another key") is None
    assert memory.num_variants == 3 and memory.describe()["feature_shape"] == [4, 4, 16]
    run = jax.jit(lambda frames: model.apply(variables, frames, FREEZE, method="frame_features"))
    for clip in (0, 4):
        frames = clip_set.frames[clip]
        np.testing.assert_allclose(memory.variants[clip][0], run(frames), rtol=1e-5, atol=1e-5)
        augmented = augmentation({"frames": frames}, np.random.default_rng([5, clip, 2]))["frames"]
        np.testing.assert_allclose(memory.variants[clip][2], run(augmented), rtol=1e-5, atol=1e-5)
        assert not np.allclose(memory.variants[clip][1], memory.variants[clip][0])
        np.testing.assert_array_equal(disk.variants[clip], memory.variants[clip])
        assert len(memory.clip_set.streams["features"][clip]) == len(frames)
    np.testing.assert_array_equal(memory.clip_set.labels, clip_set.labels)


def test_cache_rejects_impossible_settings(setup):
    clip_set, _, model, variables = setup
    with pytest.raises(ValueError, match="augmentation"):
        prefix_cache.build_prefix_cache(model, variables, clip_set, FREEZE, batch_size=2,
                                        variants=2)
    with pytest.raises(ValueError, match="no directory"):
        prefix_cache.build_prefix_cache(model, variables, clip_set, FREEZE, batch_size=2,
                                        max_memory_bytes=0)


def test_whole_backbone_frozen_frame_model_trains_only_the_head():
    """``freeze_until='pooled'``: the cache holds pooled features and the suffix is the head alone."""
    clip_set = make_clip_set(num_subjects=1, clips_per_class=1, size=16, min_length=3, max_length=3)
    config = tiny_model_config("frame_classifier")
    model = create_model(config, clip_set.num_classes, frozen_until="pooled")
    frames = np.stack([clip[1] for clip in clip_set.frames])
    variables = init_variables(model, {"frames": frames}, jax.random.key(0))
    cache = prefix_cache.build_prefix_cache(model, variables, clip_set, "pooled", batch_size=2, dtype=np.float32)
    suffix = create_model(config, clip_set.num_classes, frozen_until="pooled", input_endpoint="pooled")
    features = np.stack([clip[1] for clip in cache.clip_set.streams["features"]])
    assert features.shape == (len(clip_set), 32)          # width 4, two stages: 4 * 2 * 4
    labels = clip_set.labels
    full = _loss_and_grads(model, variables, {"frames": frames, "mask": None, "label": labels}, frame=True)
    cached = _loss_and_grads(suffix, variables, {"frames": features, "mask": None, "label": labels}, frame=True)
    np.testing.assert_allclose(cached[0], full[0], rtol=1e-5)
    assert not any(np.any(g) for g in jax.tree.leaves(full[1]["backbone"]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), cached[1]["head"],
                 full[1]["head"])


def test_finished_disk_cache_is_reused_only_with_the_same_key(setup, tmp_path):
    clip_set, _, model, variables = setup
    directory = str(tmp_path / "cache")
    kwargs = dict(batch_size=4, variants=2, augmentation=batches.Augmentation(), seed=1, dtype=np.float16,
                  max_memory_bytes=0, directory=directory)
    first = prefix_cache.build_prefix_cache(model, variables, clip_set, FREEZE, **kwargs)
    again = prefix_cache.build_prefix_cache(model, variables, clip_set, FREEZE, **kwargs)
    assert not first.reused and again.reused and again.describe()["reused"]
    first_features = [np.array(array) for array in first.variants]      # copies: the files get rewritten below
    for clip in range(len(clip_set)):
        np.testing.assert_array_equal(again.variants[clip], first_features[clip])

    changed = jax.tree.map(lambda x: x * 1.5, variables)               # other weights: other features
    rebuilt = prefix_cache.build_prefix_cache(model, changed, clip_set, FREEZE, **kwargs)
    assert not rebuilt.reused and not np.allclose(rebuilt.variants[0], first_features[0])
    os.remove(os.path.join(directory, array_store.KEY_FILE))           # as an interrupted build leaves it
    assert not prefix_cache.build_prefix_cache(model, changed, clip_set, FREEZE, **kwargs).reused
