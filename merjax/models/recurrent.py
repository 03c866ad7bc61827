"""Scanned LSTM layers that honour a per-sequence length.

Seed 001 decodes per-frame CNN features with a 3-layer LSTM or a 1-layer BiLSTM.
Clips in a batch are left-aligned and padded at the end; ``lengths`` says how many
steps of each are valid. Padded steps must not affect anything, so inputs are
zeroed there before the scan (whatever they held, even inf or NaN, reaches neither
the outputs nor the gradients of the LSTM parameters), outputs are zeroed there
after it, and the final state is taken at each sequence's last valid step. The
result equals ``torch.nn.LSTM`` run on a ``pack_padded_sequence``.

Submodule names mirror PyTorch's parameter suffixes (``l0``, ``l1``, ...,
``l0_reverse``) so ``merjax.weights.state_dict.lstm_params_from_state_dict`` is a
direct mapping.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from merjax.models import registry


def length_mask(lengths: jax.Array, num_steps: int) -> jax.Array:
    """[B] lengths -> [B,T] bool, True on valid (left-aligned) steps."""
    return jnp.arange(num_steps)[None, :] < lengths[:, None]


def _zero_padding(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))


def _final(h: jax.Array, lengths: jax.Array) -> jax.Array:
    """An empty sequence keeps the zero initial state."""
    return jnp.where((lengths > 0)[:, None], h, jnp.zeros((), h.dtype))


class LSTMStack(nn.Module):
    """Stacked unidirectional LSTM with dropout between layers (like torch's ``dropout``).

    ``__call__(x [B,T,D], lengths [B], *, train)`` returns ``(outputs [B,T,H],
    final [B,H])``: the last layer's outputs (zero on padded steps) and its hidden
    state at each sequence's last valid step.
    """

    hidden_size: int
    num_layers: int = 1
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, *,
                 train: bool) -> tuple[jax.Array, jax.Array]:
        lengths = jnp.asarray(lengths, jnp.int32)
        mask = length_mask(lengths, x.shape[1])
        x = _zero_padding(x, mask)
        for k in range(self.num_layers):
            if k > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            rnn = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size, parent=None), name=f"l{k}")
            (_, h), x = rnn(x, seq_lengths=lengths, return_carry=True)
            x = _zero_padding(x, mask)
        return x, _final(h, lengths)


class BiLSTM(nn.Module):
    """One bidirectional LSTM layer.

    ``__call__(x [B,T,D], lengths [B], *, train)`` returns ``(outputs [B,T,2H],
    final [B,2H])``. Outputs concatenate forward and backward states per step (zero
    on padded steps); final concatenates the forward state at the last valid step
    and the backward state after reading from the last valid step down to step 0,
    i.e. torch's ``h_n`` for a packed sequence. ``train`` is unused (no dropout in
    a single layer) and kept for a uniform temporal-model interface.
    """

    hidden_size: int

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, *,
                 train: bool) -> tuple[jax.Array, jax.Array]:
        del train
        lengths = jnp.asarray(lengths, jnp.int32)
        mask = length_mask(lengths, x.shape[1])
        x = _zero_padding(x, mask)
        forward = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size, parent=None), name="l0")
        backward = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size, parent=None), name="l0_reverse")
        (_, h_fwd), out_fwd = forward(x, seq_lengths=lengths, return_carry=True)
        (_, h_bwd), out_bwd = backward(x, seq_lengths=lengths, return_carry=True,
                                       reverse=True, keep_order=True)
        outputs = _zero_padding(jnp.concatenate([out_fwd, out_bwd], axis=-1), mask)
        final = _final(jnp.concatenate([h_fwd, h_bwd], axis=-1), lengths)
        return outputs, final


TEMPORAL_MODELS = {
    "lstm": lambda config: LSTMStack(hidden_size=int(config["hidden"]), num_layers=int(config["layers"]),
                                     dropout=float(config["dropout"])),
    "bilstm": lambda config: BiLSTM(hidden_size=int(config["hidden"])),
}


def temporal_model(config: Mapping[str, Any]) -> nn.Module:
    """The temporal model of ``config.model.temporal``: ``kind`` ('lstm' | 'bilstm'), ``hidden`` (units),
    ``layers`` and ``dropout`` (between layers; lstm only)."""
    return registry.choose(TEMPORAL_MODELS, config, "kind", "--config.model.temporal.kind")(config)
