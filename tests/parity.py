"""Helpers shared by the parity tests of merjax models against PyTorch references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch


def assert_close(actual, expected, rtol: float = 1e-4) -> None:
    """Elementwise within rtol of the reference's scale (random nets make some values ~0)."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    """A torch activation as numpy, channels last for 4-D tensors."""
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


def random_frames(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def variable_shapes(tree):
    return jax.tree_util.tree_map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype)), tree)
