"""Loads the published VGGFace2 ResNet-50 / SE-ResNet-50 weights into merjax variables.

The VGGFace2 authors' Caffe models were converted to pickles of numpy arrays keyed
like the PyTorch port's state dicts (``resnet50_ft``, ``senet50_ft``; see
``merjax.models.resnet``). ``load_vggface2`` reads one with the code-refusing
unpickler, converts it and checks it against the variables the matching merjax
model expects, so a truncated file, a file of the other architecture or a wrong
shape fails at load time with the offending key named, not later inside ``apply``.
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import Any

import jax
import jax.numpy as jnp

from merjax.models.resnet import ResNet, ResNet50, SENet50
from merjax.weights.state_dict import (
    Variables,
    load_vggface2_pickle,
    resnet_state_dict_key,
    resnet_variables_from_state_dict,
)

VGGFACE2_NUM_IDENTITIES = 8631
_ARCHS: dict[str, Callable[..., ResNet]] = {"resnet50": ResNet50, "senet50": SENet50}


def _leaves(tree: Any) -> dict[tuple[str, tuple[str, ...]], tuple[int, ...]]:
    """``(collection, module path)`` -> shape for every array of a variables tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves = {}
    for keys, value in flat:
        collection, *path = (k.key for k in keys)
        leaves[collection, tuple(path)] = tuple(value.shape)
    return leaves


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """A merjax variable's shape in the state dict's layout (conv OIHW, dense [out, in])."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2 and path[-1] == "kernel":
        return shape[::-1]
    return shape


def load_vggface2(path: str | PathLike[str], arch: str = "resnet50", *,
                  include_fc: bool = True) -> Variables:
    """Returns ``{'params', 'batch_stats'}`` for ``ResNet50`` / ``SENet50`` from a VGGFace2 pickle.

    Args:
      path: the published weight pickle (e.g. ``resnet50_ft_weight.pkl``,
        ``senet50_ft_weight.pkl``): a dict of numpy arrays keyed ``conv1.weight``,
        ``layer1.0.bn1.running_mean``, ..., ``fc.weight``.
      arch: ``'resnet50'`` or ``'senet50'``.
      include_fc: True for the model with the 8631-way identity classifier
        (``num_classes=8631``); False drops ``fc.*`` for the ``num_classes=None`` backbone.

    Raises:
      ValueError: on an unknown ``arch``, or on a state-dict key the model lacks, a key
        it needs that the file lacks, or a shape mismatch; the message names the key.
      pickle.UnpicklingError: if the file holds anything but numpy arrays in containers.
    """
    if arch not in _ARCHS:
        raise ValueError(f"unknown VGGFace2 arch {arch!r}; expected one of {sorted(_ARCHS)}")
    variables = resnet_variables_from_state_dict(load_vggface2_pickle(path), include_fc=include_fc)
    model = _ARCHS[arch](num_classes=VGGFACE2_NUM_IDENTITIES if include_fc else None)
    template = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                              jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    expected, found = _leaves(template), _leaves(variables)

    def describe(leaf: tuple[str, tuple[str, ...]]) -> str:
        return f"{resnet_state_dict_key(*leaf)!r} ({leaf[0]}/{'/'.join(leaf[1])})"

    missing = sorted(expected.keys() - found.keys())
    if missing:
        raise ValueError(f"{path}: {arch} weight file lacks {len(missing)} key(s): "
                         + ", ".join(describe(leaf) for leaf in missing))
    unexpected = sorted(found.keys() - expected.keys())
    if unexpected:
        raise ValueError(f"{path}: {len(unexpected)} key(s) not in {arch}: "
                         + ", ".join(describe(leaf) for leaf in unexpected))
    for leaf, shape in sorted(expected.items()):
        if found[leaf] != shape:
            raise ValueError(
                f"{path}: {describe(leaf)} has shape {_torch_shape(leaf[1], found[leaf])} in the "
                f"file but {arch} expects {_torch_shape(leaf[1], shape)}")
    return variables
