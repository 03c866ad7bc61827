"""Reads the Keras 2 HDF5 releases of the VGGFace2 ResNet-50 / SE-ResNet-50 as a state dict.

rcmalli/keras-vggface published the VGGFace2 networks as Keras 2 weight files
(``rcmalli_vggface_tf_resnet50.h5``, ``rcmalli_vggface_tf_notop_senet50.h5``, ...).
``keras_h5_to_state_dict`` renames and re-lays their arrays into the state-dict
layout of the published pickles (``conv1.weight``, ``layer1.0.downsample.1.running_var``,
``fc.weight``), so ``resnet_variables_from_state_dict`` and the key/shape checks of
``load_vggface2`` apply unchanged:

* ``conv1/7x7_s2`` (+ ``/bn``) -> ``conv1`` / ``bn1``; ``classifier`` -> ``fc``;
* ``conv{s}_{b}_{role}`` (+ ``/bn``) -> ``layer{s-1}.{b-1}.``: ``1x1_reduce`` -> ``conv1`` /
  ``bn1``, ``3x3`` -> ``conv2`` / ``bn2``, ``1x1_increase`` -> ``conv3`` / ``bn3``,
  ``1x1_proj`` -> ``downsample.0`` / ``downsample.1``; the SE convs ``1x1_down`` -> ``conv4``
  and ``1x1_up`` -> ``conv5``;
* conv kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in], and ``gamma``,
  ``beta``, ``moving_mean``, ``moving_variance`` -> ``weight``, ``bias``,
  ``running_mean``, ``running_var``.

The weights run in merjax's Caffe graph, not keras-vggface's (see ``load_vggface2``).
Only arrays are read (HDF5 holds no code). Layers without weights (activations,
pooling) are skipped; a layer with weights that maps to nothing is an error naming
it, never silently dropped.
"""

from __future__ import annotations

import re
from os import PathLike

import h5py
import numpy as np

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_BLOCK_LAYER = re.compile(r"conv(\d+)_(\d+)_(1x1_reduce|3x3|1x1_increase|1x1_proj|1x1_down|1x1_up)(/bn)?")
_BLOCK_CONVS = {"1x1_reduce": "conv1", "3x3": "conv2", "1x1_increase": "conv3",
                "1x1_proj": "downsample.0", "1x1_down": "conv4", "1x1_up": "conv5"}
_BLOCK_BNS = {"1x1_reduce": "bn1", "3x3": "bn2", "1x1_increase": "bn3", "1x1_proj": "downsample.1"}
_TOP_LAYERS = {"conv1/7x7_s2": ("conv1", "conv"), "conv1/7x7_s2/bn": ("bn1", "bn"),
               "classifier": ("fc", "dense")}
_LEAVES = {
    "conv": {"kernel": "weight", "bias": "bias"},
    "dense": {"kernel": "weight", "bias": "bias"},
    "bn": {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
           "moving_variance": "running_var"},
}
_KERNEL_NDIM = {"conv": 4, "dense": 2}
_WEIGHT_LEAF = re.compile(r"(?:.*/)?(\w+)(?::\d+)?")


def _torch_module(layer: str) -> tuple[str, str] | None:
    """``conv2_1_1x1_proj/bn`` -> (``layer1.0.downsample.1``, ``bn``); None if unrecognised."""
    if layer in _TOP_LAYERS:
        return _TOP_LAYERS[layer]
    match = _BLOCK_LAYER.fullmatch(layer)
    if match is None:
        return None
    stage, block, role, bn = match.groups()
    names = _BLOCK_BNS if bn else _BLOCK_CONVS
    if int(stage) < 2 or int(block) < 1 or role not in names:
        return None
    return f"layer{int(stage) - 1}.{int(block) - 1}.{names[role]}", "bn" if bn else "conv"


def _string_list_attr(group: h5py.Group, name: str) -> list[str] | None:
    """A Keras 2 list attribute, also when Keras split it into ``name0``, ``name1``, ...; None if absent."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
        if not chunks:
            return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v)
            for chunk in chunks for v in np.atleast_1d(chunk)]


def _weights_root(f: h5py.File, path: str) -> tuple[h5py.Group, list[str]]:
    """The group holding the layers (the file, or ``model_weights`` of a ``model.save`` file)."""
    for group in (f, f.get("model_weights")):
        if isinstance(group, h5py.Group):
            layers = _string_list_attr(group, "layer_names")
            if layers is not None:
                return group, layers
    hint = " (it looks like a Keras 3 '.weights.h5' file)" if "layers" in f else ""
    raise ValueError(f"{path}: no Keras 'layer_names' attribute{hint}; only Keras 2 HDF5 weight "
                     f"files (e.g. rcmalli_vggface_tf_resnet50.h5) are read")


def _read_layer(root: h5py.Group, layer: str, path: str) -> dict[str, np.ndarray]:
    """The state-dict entries of one Keras layer (none for a layer without weights)."""
    group = root.get(layer)
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{path}: layer {layer!r} is listed in 'layer_names' but has no group")
    weight_names = _string_list_attr(group, "weight_names") or []
    if not weight_names:
        return {}
    target = _torch_module(layer)
    if target is None:
        raise ValueError(f"{path}: unrecognised Keras layer {layer!r} with weights {weight_names}; "
                         f"not part of the VGGFace2 ResNet-50 / SE-ResNet-50")
    module, kind = target
    entries: dict[str, np.ndarray] = {}
    for weight_name in weight_names:
        match = _WEIGHT_LEAF.fullmatch(weight_name)
        leaf = _LEAVES[kind].get(match.group(1)) if match else None
        if leaf is None:
            raise ValueError(f"{path}: unexpected weight {weight_name!r} in layer {layer!r}; a {kind} "
                             f"layer holds {sorted(_LEAVES[kind])}")
        dataset = group.get(weight_name)
        if not isinstance(dataset, h5py.Dataset):
            raise ValueError(f"{path}: weight {weight_name!r} of layer {layer!r} has no dataset")
        array = dataset[()]
        if leaf == "weight" and kind in _KERNEL_NDIM:
            if array.ndim != _KERNEL_NDIM[kind]:
                raise ValueError(f"{path}: {weight_name!r} in layer {layer!r} has shape {array.shape}; "
                                 f"expected a {_KERNEL_NDIM[kind]}-D kernel")
            array = array.transpose(3, 2, 0, 1) if kind == "conv" else array.T
        key = f"{module}.{leaf}"
        if key in entries:
            raise ValueError(f"{path}: layer {layer!r} holds two weights for {key!r}")
        entries[key] = array
    return entries


def keras_h5_to_state_dict(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """Reads a keras-vggface ResNet-50 / SENet-50 Keras 2 weight file as a VGGFace2 state dict.

    Accepts weights saved by ``model.save_weights`` (layers at the root) or
    ``model.save`` (layers under ``model_weights``); the model config a full save
    carries is not read.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: naming the file, if it is not a readable HDF5 file (empty, truncated,
        another format), not a Keras 2 weight file (e.g. a Keras 3 ``.weights.h5``), or
        holds a layer or weight that is not part of the VGGFace2 networks.
    """
    path = str(path)
    state: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            root, layers = _weights_root(f, path)
            for layer in layers:
                for key, array in _read_layer(root, layer, path).items():
                    if key in state:
                        raise ValueError(f"{path}: two Keras layers map to {key!r} (second: {layer!r})")
                    state[key] = array
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file (empty, truncated, corrupt or another "
                         f"format): {e}") from e
    return state
