"""Losses: parity with PyTorch and with the focal-loss formula, make_loss over targets, class weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from merjax.errors import UserError
from merjax.train import losses


def _random(seed, shape, classes):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=shape + (classes,)) * 3).astype(np.float32)
    targets = rng.integers(0, classes, shape)
    return rng, logits, targets


def _torch_focal(logits, targets, alpha, gamma):
    """-alpha_t (1-p_t)^gamma log p_t averaged over samples, written in torch from the formula."""
    log_p = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
    return (-alpha * (1 - log_p.exp()) ** gamma * log_p).mean()


def _numpy_focal(logits, targets, alpha, gamma, mask):
    """The same formula in float64 NumPy, with a validity mask."""
    logits = logits.astype(np.float64)
    log_p_all = logits - logits.max(-1, keepdims=True)
    log_p_all -= np.log(np.exp(log_p_all).sum(-1, keepdims=True))
    log_p = np.take_along_axis(log_p_all, targets[..., None], -1)[..., 0]
    per_sample = -alpha * (1 - np.exp(log_p)) ** gamma * log_p
    return (mask * per_sample).sum() / mask.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_matches_torch_with_class_weights(seed):
    rng, logits, targets = _random(seed, (12,), 4)
    class_weights = rng.uniform(0.2, 3.0, 4).astype(np.float32)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(targets), weight=torch.tensor(class_weights), reduction="mean")
    got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                               weights=jnp.asarray(class_weights[targets]))
    np.testing.assert_allclose(got, expected.item(), rtol=1e-6)
    # The old call of merjax.train.steps: positional labels, keyword weights, no mask.
    unweighted = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets))
    np.testing.assert_allclose(losses.cross_entropy(logits, targets), unweighted.item(), rtol=1e-6)


def test_cross_entropy_of_window_logits_with_clip_targets_and_mask_matches_torch():
    rng, logits, _ = _random(3, (5, 4), 3)                  # [B=5, W=4, C=3]
    labels = rng.integers(0, 3, 5)                          # one label per clip, [B]
    mask = rng.random((5, 4)) < 0.7
    mask[:, 0] = True
    class_weights = np.array([0.5, 2.0, 1.3], np.float32)
    valid_logits = logits[mask]                             # torch sees only the valid windows
    valid_labels = np.broadcast_to(labels[:, None], (5, 4))[mask]
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(valid_logits), torch.tensor(valid_labels), weight=torch.tensor(class_weights))
    got = losses.cross_entropy(logits, labels, weights=class_weights[labels], mask=mask)
    np.testing.assert_allclose(got, expected.item(), rtol=1e-6)
    # Padding rows change nothing whatever their logits.
    padded = logits.copy()
    padded[~mask] = 1e4
    np.testing.assert_allclose(losses.cross_entropy(padded, labels, weights=class_weights[labels], mask=mask),
                               expected.item(), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
def test_focal_matches_torch_and_numpy_transcriptions(gamma):
    rng, logits, targets = _random(4, (16,), 3)
    alpha = rng.uniform(0.3, 2.0, 3).astype(np.float32)
    expected = _torch_focal(torch.tensor(logits), torch.tensor(targets), torch.tensor(alpha[targets]), gamma)
    got = losses.focal(logits, targets, weights=alpha[targets], gamma=gamma)
    np.testing.assert_allclose(got, expected.item(), rtol=1e-6)
    mask = rng.random(16) < 0.6
    np.testing.assert_allclose(losses.focal(logits, targets, weights=alpha[targets], mask=mask, gamma=gamma),
                               _numpy_focal(logits, targets, alpha[targets], gamma, mask), rtol=1e-6)


def test_focal_with_gamma_zero_and_no_weights_equals_cross_entropy():
    _, logits, targets = _random(5, (6, 3), 4)
    mask = np.arange(18).reshape(6, 3) % 4 != 0
    np.testing.assert_allclose(losses.focal(logits, targets, mask=mask, gamma=0.0),
                               losses.cross_entropy(logits, targets, mask=mask), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradients_match_torch_autograd(gamma):
    rng, logits, targets = _random(6, (10,), 3)
    alpha = rng.uniform(0.3, 2.0, 3).astype(np.float32)
    logits_torch = torch.tensor(logits, requires_grad=True)
    _torch_focal(logits_torch, torch.tensor(targets), torch.tensor(alpha[targets]), gamma).backward()
    got = jax.grad(lambda x: losses.focal(x, targets, weights=alpha[targets], gamma=gamma))(jnp.asarray(logits))
    np.testing.assert_allclose(got, logits_torch.grad.numpy(), atol=1e-5)


def test_focal_is_finite_where_the_target_probability_rounds_to_one():
    logits = jnp.array([[60.0, 0.0, 0.0], [0.0, 1.0, 0.0]])   # p_t == 1 in float32 for the first row
    for gamma in (0.0, 0.5, 2.0):
        value, grad = jax.value_and_grad(lambda x: losses.focal(x, jnp.array([0, 1]), gamma=gamma))(logits)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), gamma
        np.testing.assert_allclose(grad[0], 0.0, atol=1e-12)


def test_make_loss_sums_targets_with_their_weights():
    rng = np.random.default_rng(7)
    label_logits = rng.normal(size=(4, 3)).astype(np.float32)
    region_logits = rng.normal(size=(4, 6, 2)).astype(np.float32)
    label, regions = rng.integers(0, 3, 4), rng.integers(0, 2, (4, 6))
    region_weights = rng.uniform(0.5, 2.0, (4, 6)).astype(np.float32)
    label_mask = np.array([True, True, True, False])
    batch = {"targets": {"label": label, "regions": regions},
             "weights": {"regions": region_weights},
             "masks": {"label": label_mask}}
    config = ml_collections.ConfigDict(dict(name="focal", gamma=1.5, target_weights={"regions": 0.25}))
    total, per_target = losses.make_loss(config)({"label": label_logits, "regions": region_logits}, batch)
    expected_label = losses.focal(label_logits, label, mask=label_mask, gamma=1.5)
    expected_regions = losses.focal(region_logits, regions, weights=region_weights, gamma=1.5)
    assert sorted(per_target) == ["label", "regions"]
    np.testing.assert_allclose(per_target["label"], expected_label, rtol=1e-6)
    np.testing.assert_allclose(per_target["regions"], expected_regions, rtol=1e-6)
    np.testing.assert_allclose(total, expected_label + 0.25 * expected_regions, rtol=1e-6)
    # gamma belongs to focal only; a bare array is the target "label"; it all runs under jit.
    objective = losses.make_loss({"name": "cross_entropy", "gamma": 1.5})
    total, per_target = jax.jit(objective)(label_logits, {"targets": {"label": label}, "weights": {}, "masks": {}})
    np.testing.assert_allclose(total, losses.cross_entropy(label_logits, label), rtol=1e-6)
    assert list(per_target) == ["label"]


def test_make_loss_errors_name_the_problem():
    with pytest.raises(UserError, match=r"--config\.loss\.name='dice'.*\['cross_entropy', 'focal'\]"):
        losses.make_loss({"name": "dice"})
    with pytest.raises(UserError, match=r"--config\.loss\.gamma=-1"):
        losses.make_loss({"name": "focal", "gamma": -1.0})
    objective = losses.make_loss({"name": "cross_entropy", "target_weights": {"regoins": 2.0}})
    logits, batch = np.zeros((2, 3), np.float32), {"targets": {"label": np.array([0, 1])}}
    with pytest.raises(UserError, match="'regoins'"):
        objective(logits, batch)
    objective = losses.make_loss({"name": "cross_entropy"})
    with pytest.raises(ValueError, match="'regions'"):
        objective({"label": logits, "regions": logits}, batch)
    with pytest.raises(ValueError, match="'regions'"):
        objective(logits, {"targets": {"label": np.array([0, 1]), "regions": np.array([0, 1])}})


def test_class_weights_are_inverse_frequency_per_column_and_feed_sample_weights():
    weights = losses.class_weights(np.repeat([0, 1, 2], [10, 20, 40]), 3)
    assert weights.shape == (3,) and weights.dtype == np.float32
    np.testing.assert_allclose(weights * np.array([10, 20, 40]), weights[0] * 10, rtol=1e-6)
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-6)

    rng = np.random.default_rng(8)
    values = rng.integers(0, 2, (30, 6))                      # e.g. 6 region targets, 2 classes each
    table = losses.class_weights(values, 2)
    assert table.shape == (6, 2)
    for column in range(6):
        np.testing.assert_allclose(table[column], losses.class_weights(values[:, column], 2), rtol=1e-6)
    per_sample = losses.sample_weights(values, table)
    assert per_sample.shape == (30, 6) and per_sample.dtype == np.float32
    np.testing.assert_allclose(per_sample[4, 2], table[2, values[4, 2]])
    np.testing.assert_allclose(losses.sample_weights(np.array([2, 0]), weights), [weights[2], weights[0]])


def test_class_weights_refuse_a_class_without_training_example():
    with pytest.raises(UserError, match=r"class\(es\) \[1\] have no training example"):
        losses.class_weights(np.array([0, 0, 2, 2, 2]), 3)
    values = np.zeros((4, 3), np.int64)
    values[:2] = 1
    values[:, 2] = 0
    with pytest.raises(UserError, match=r"\[1\] have no training example in target column 2"):
        losses.class_weights(values, 2)
    with pytest.raises(ValueError, match="target value -1"):
        losses.class_weights(np.array([0, -1, 1]), 2)
