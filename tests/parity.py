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


def resnet_outputs(model, variables, torch_model, frames: np.ndarray):
    """Logits and endpoints of a merjax ResNet and of its torch reference on the same RGB frames."""
    from merjax.models import vggface2_preprocess
    from tests import torch_reference as ref

    logits, endpoints = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, vggface2_preprocess(frames))
    with torch.no_grad():
        expected = torch_model.endpoints(ref.preprocess(torch.from_numpy(frames)))
    return logits, endpoints, expected


def assert_resnet_matches_torch(model, variables, torch_model, frames: np.ndarray) -> None:
    """Pooled features and logits of a merjax ResNet equal its torch reference's."""
    logits, endpoints, expected = resnet_outputs(model, variables, torch_model, frames)
    assert_close(endpoints["pooled"], expected["pooled"].numpy())
    assert_close(logits, expected["logits"].numpy())
