"""Classification losses.

Cross-entropy with optional per-class weights (for imbalanced micro-expression
classes) and optional per-example weights (for padded windows or batch slots).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_weights: jax.Array | None = None,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Weighted mean softmax cross-entropy.

    Args:
      logits: [..., C] unnormalised scores.
      labels: [...] integer labels, broadcastable to logits.shape[:-1].
      class_weights: optional [C] weight per true class.
      weights: optional [...] weight per example (0 for padding).

    Returns:
      sum_i w_i * ce_i / sum_i w_i, where w_i = weights_i * class_weights[label_i].
    """
    labels = jnp.broadcast_to(labels, logits.shape[:-1])
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    per_example = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    total_weight = jnp.ones_like(per_example)
    if weights is not None:
        total_weight = total_weight * weights
    if class_weights is not None:
        total_weight = total_weight * jnp.asarray(class_weights, jnp.float32)[labels]
    return jnp.sum(per_example * total_weight) / jnp.maximum(jnp.sum(total_weight), 1e-12)


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Class weights proportional to 1/count, normalised to mean 1 over classes.

    A class with no example raises: a weight for it would be meaningless and
    usually means a fold was built wrongly.
    """
    counts = np.asarray(counts, np.float64)
    if np.any(counts <= 0):
        missing = [int(c) for c in np.flatnonzero(counts <= 0)]
        raise ValueError(f"class(es) {missing} have no training example; cannot weight them")
    weights = 1.0 / counts
    return (weights / weights.mean()).astype(np.float32)
