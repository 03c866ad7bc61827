"""Loads the published VGGFace2 ResNet-50 / SE-ResNet-50 weights into merjax variables.

The VGGFace2 authors' Caffe models were converted to pickles of numpy arrays keyed
like the PyTorch port's state dicts (``resnet50_ft``, ``senet50_ft``; see
``merjax.models.resnet``), and to Keras 2 HDF5 weight files by rcmalli/keras-vggface
(``rcmalli_vggface_tf_resnet50.h5``, ...; see ``merjax.weights.keras_h5``).
``load_vggface2`` reads either (the pickle with the code-refusing unpickler), converts
it and checks it against the variables the matching merjax model expects, so a
truncated file, a file of the other architecture or a wrong shape fails at load time
with the file and the offending key named, not later inside ``apply``.
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from merjax.models.resnet import ResNet, ResNet50, SENet50
from merjax.weights.keras_h5 import HDF5_SIGNATURE, keras_h5_to_state_dict
from merjax.weights.state_dict import (
    Variables,
    load_vggface2_pickle,
    resnet_state_dict_key,
    resnet_variables_from_state_dict,
)

VGGFACE2_NUM_IDENTITIES = 8631
_ARCHS: dict[str, Callable[..., ResNet]] = {"resnet50": ResNet50, "senet50": SENet50}
_HDF5_SUFFIXES = (".h5", ".hdf5")


def _read_state_dict(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """The file's state dict, read as Keras 2 HDF5 if it starts with the HDF5 signature or is
    named ``.h5`` / ``.hdf5``, else as a weight pickle."""
    with open(path, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    if not head:
        raise ValueError(f"{path}: empty file; expected a VGGFace2 weight pickle or Keras 2 .h5 file")
    if head == HDF5_SIGNATURE or str(path).lower().endswith(_HDF5_SUFFIXES):
        return keras_h5_to_state_dict(path)
    return load_vggface2_pickle(path)


def variable_shapes(tree: Any) -> dict[tuple[str, tuple[str, ...]], tuple[int, ...]]:
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
    """Returns ``{'params', 'batch_stats'}`` for ``ResNet50`` / ``SENet50`` from a VGGFace2 file.

    The keras-vggface graph differs from the Caffe one merjax runs (``'same'`` padding
    in conv1, floor-mode max-pool, BatchNorm eps 1e-3 in ResNet-50 / 1e-4 in SENet-50);
    merjax runs the ``.h5`` weights in the Caffe graph, as it does the pickles, so its
    outputs are not keras-vggface's.

    Args:
      path: the published weight pickle (e.g. ``resnet50_ft_weight.pkl``,
        ``senet50_ft_weight.pkl``: a dict of numpy arrays keyed ``conv1.weight``,
        ``layer1.0.bn1.running_mean``, ..., ``fc.weight``) or Keras 2 HDF5 file (e.g.
        ``rcmalli_vggface_tf_senet50.h5``; the ``notop`` files lack the classifier, so
        need ``include_fc=False``). HDF5 is recognised by its signature or suffix.
      arch: ``'resnet50'`` or ``'senet50'``.
      include_fc: True for the model with the 8631-way identity classifier
        (``num_classes=8631``); False drops ``fc.*`` for the ``num_classes=None`` backbone.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: on an unknown ``arch``; on an empty, truncated or corrupt file, or an
        HDF5 file that is not a Keras 2 weight file of these networks; on a state-dict key
        the model lacks, a key it needs that the file lacks, or a shape mismatch. The
        message names the file and the key.
      pickle.UnpicklingError: if a pickle holds anything but numpy arrays in containers.
    """
    if arch not in _ARCHS:
        raise ValueError(f"unknown VGGFace2 arch {arch!r}; expected one of {sorted(_ARCHS)}")
    state = _read_state_dict(path)
    try:
        variables = resnet_variables_from_state_dict(state, include_fc=include_fc)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    model = _ARCHS[arch](num_classes=VGGFACE2_NUM_IDENTITIES if include_fc else None)
    template = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                              jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    expected, found = variable_shapes(template), variable_shapes(variables)

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
