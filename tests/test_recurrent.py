"""The scanned LSTMs equal torch.nn.LSTM on packed sequences and ignore padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from merjax.models import BiLSTM, LSTMStack
from merjax.weights.state_dict import lstm_params_from_state_dict

BATCH, STEPS, FEATURES, HIDDEN = 4, 7, 5, 6
LENGTHS = np.array([7, 3, 5, 1], np.int32)


def _inputs(seed: int, garbage_seed: int, lengths: np.ndarray = LENGTHS) -> np.ndarray:
    """Valid steps from ``seed``; padded steps hold large garbage from ``garbage_seed``."""
    x = np.random.default_rng(seed).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    garbage = 1e3 * np.random.default_rng(garbage_seed).normal(size=x.shape).astype(np.float32)
    valid = np.arange(STEPS)[None, :, None] < lengths[:, None, None]
    return np.where(valid, x, garbage)


def _torch_lstm(x: np.ndarray, lstm: torch.nn.LSTM) -> tuple[np.ndarray, torch.Tensor]:
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(LENGTHS).long(), batch_first=True,
        enforce_sorted=False)
    with torch.no_grad():
        out, (h_n, _) = lstm(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=STEPS)
    return out.numpy(), h_n


def _shapes(tree):
    return jax.tree_util.tree_map(jnp.shape, tree)


@pytest.fixture(scope="module")
def stack():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(FEATURES, HIDDEN, num_layers=3, batch_first=True, dropout=0.5).eval()
    model = LSTMStack(HIDDEN, num_layers=3, dropout=0.5)
    params = lstm_params_from_state_dict(lstm.state_dict())
    return lstm, model, {"params": params}, jax.jit(model.apply, static_argnames="train")


@pytest.fixture(scope="module")
def bilstm():
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(FEATURES, HIDDEN, batch_first=True, bidirectional=True)
    model = BiLSTM(HIDDEN)
    params = lstm_params_from_state_dict(lstm.state_dict())
    return lstm, model, {"params": params}, jax.jit(model.apply, static_argnames="train")


def _template(model):
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, LENGTHS, train=False),
                          jnp.zeros((BATCH, STEPS, FEATURES)))


def test_lstm_stack_matches_torch(stack):
    lstm, model, variables, apply = stack
    assert _shapes(variables) == _shapes(_template(model))
    x = _inputs(0, garbage_seed=1)
    outputs, final = apply(variables, x, LENGTHS, train=False)
    expected_out, h_n = _torch_lstm(x, lstm)
    assert outputs.shape == (BATCH, STEPS, HIDDEN) and final.shape == (BATCH, HIDDEN)
    np.testing.assert_allclose(np.asarray(outputs), expected_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(final), h_n[-1].numpy(), rtol=0, atol=1e-5)


def test_bilstm_matches_torch(bilstm):
    lstm, model, variables, apply = bilstm
    assert _shapes(variables) == _shapes(_template(model))
    x = _inputs(2, garbage_seed=3)
    outputs, final = apply(variables, x, LENGTHS, train=False)
    expected_out, h_n = _torch_lstm(x, lstm)
    assert outputs.shape == (BATCH, STEPS, 2 * HIDDEN) and final.shape == (BATCH, 2 * HIDDEN)
    np.testing.assert_allclose(np.asarray(outputs), expected_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(final), torch.cat([h_n[0], h_n[1]], -1).numpy(),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("which", ["stack", "bilstm"])
def test_padding_garbage_changes_nothing(which, request):
    _, _, variables, apply = request.getfixturevalue(which)
    lengths = np.array([5, 0, 7, 2], np.int32)
    first = apply(variables, _inputs(4, 5, lengths), lengths, train=False)
    second = apply(variables, _inputs(4, 6, lengths), lengths, train=False)
    jax.tree_util.tree_map(np.testing.assert_array_equal, first, second)
    outputs, final = first
    np.testing.assert_array_equal(np.asarray(final[1]), 0)  # empty sequence: initial state
    assert not np.asarray(outputs)[np.arange(STEPS)[None, :] >= lengths[:, None]].any()

    x = _inputs(4, 5, lengths)
    x[0, 1] += 1.0  # a valid step must matter
    changed = apply(variables, x, lengths, train=False)
    assert not np.allclose(changed[1][0], final[0])


@pytest.mark.parametrize("which", ["stack", "bilstm"])
def test_nonfinite_padding_gives_finite_gradients(which, request):
    _, model, variables, _ = request.getfixturevalue(which)
    x = _inputs(7, garbage_seed=8)
    x[np.arange(STEPS)[None, :] >= LENGTHS[:, None]] = np.inf

    def loss(params):
        _, final = model.apply({"params": params}, x, LENGTHS, train=False)
        return jnp.sum(final**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


def test_dropout_between_layers_only_in_train(stack):
    _, _, variables, apply = stack
    x = _inputs(9, garbage_seed=10)
    eval_final = apply(variables, x, LENGTHS, train=False)[1]
    train_a, train_b = (
        apply(variables, x, LENGTHS, train=True, rngs={"dropout": jax.random.key(seed, impl="rbg")})[1]
        for seed in (0, 1))
    assert not np.allclose(train_a, eval_final) and not np.allclose(train_a, train_b)


def test_converter_rejects_an_incomplete_state_dict():
    state = torch.nn.LSTM(3, 2).state_dict()
    del state["bias_hh_l0"]
    with pytest.raises(ValueError, match="bias_hh"):
        lstm_params_from_state_dict(state)
    with pytest.raises(ValueError, match="no LSTM weights"):
        lstm_params_from_state_dict(state, prefix="decoder.")
