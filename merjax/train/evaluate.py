"""Prediction over evaluation batches and per-clip aggregation on the host."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from merjax.train.sharding import shard_batch


def predict(
    eval_step: Callable,
    state: Any,
    batches: Iterable[tuple[dict[str, np.ndarray], np.ndarray]],
    mesh: Mesh,
) -> tuple[np.ndarray, np.ndarray]:
    """Runs the jitted ``eval_step`` on every batch.

    Args:
      batches: (this process's batch rows, the global batch's sample indices
        with -1 for padding slots).

    Returns:
      (indices [n], log_probs [n,C]) for the real samples, in batch order.
    """
    indices, log_probs = [], []
    for batch, batch_indices in batches:
        outputs = eval_step(state, shard_batch(batch, mesh))["log_probs"]
        if jax.process_count() > 1:
            outputs = multihost_utils.process_allgather(outputs, tiled=True)
        outputs = np.asarray(jax.device_get(outputs))
        keep = batch_indices >= 0
        indices.append(batch_indices[keep])
        log_probs.append(outputs[keep])
    return np.concatenate(indices), np.concatenate(log_probs)


def mean_by_group(groups: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Averages rows of ``values`` that share a group id; returns (sorted unique groups, means)."""
    unique, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(unique), values.shape[-1]), np.float64)
    np.add.at(sums, inverse, values)
    counts = np.bincount(inverse, minlength=len(unique))[:, None]
    return unique, sums / counts


def nll(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    return float(-np.mean(np.take_along_axis(log_probs, labels[:, None], axis=-1)))
