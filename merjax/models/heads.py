"""The fully connected classification head of seed 001 (fc1-fc3).

Seed 001 says only that the encoder's (or LSTM's) output is "fully connected to
the classification layers {fc1, fc2, fc3} to decrease the feature vector size";
it gives no widths, activations or dropout. The defaults here (512 -> 128 ->
classes, ReLU, dropout 0.5) are merjax's choice and are configurable.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


class MLPHead(nn.Module):
    """fc1 -> ReLU -> dropout -> ... -> fc{n+1} (logits), one hidden layer per ``hidden_sizes`` entry.

    Dropout draws from the ``'dropout'`` rng collection when ``train`` is True.
    """

    num_classes: int
    hidden_sizes: Sequence[int] = (512, 128)
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for k, size in enumerate(self.hidden_sizes):
            x = nn.relu(nn.Dense(size, name=f"fc{k + 1}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name=f"fc{len(self.hidden_sizes) + 1}")(x)
