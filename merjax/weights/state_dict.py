"""Converts PyTorch-style state dicts into Flax variables for merjax modules.

The VGGFace2 ResNet-50 weights are published as a pickle of numpy arrays keyed
like a PyTorch state dict (``conv1.weight``, ``layer1.0.downsample.1.running_var``,
``fc.weight`` for the 8631 identities); the SE-ResNet-50 ones add each block's
squeeze-excitation convolutions ``layer1.0.conv4.{weight,bias}`` and
``layer1.0.conv5.{weight,bias}``. merjax's module names mirror those keys,
so conversion is a renaming plus layout changes: conv kernels OIHW -> HWIO, dense
kernels [out,in] -> [in,out], BatchNorm ``weight``/``bias`` -> params
``scale``/``bias`` and ``running_mean``/``running_var`` -> batch_stats
``mean``/``var``. LSTM weights (gate order i, f, g, o) are split per gate, and
torch's two biases are summed into Flax's one.

Values may be numpy arrays or torch tensors; torch is never imported here.
"""

from __future__ import annotations

import re
from os import PathLike
from typing import Any, Mapping

import numpy as np

from merjax.weights.safe_pickle import load_arrays_pickle

Variables = dict[str, Any]

_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
_RESNET_LEAVES = {
    "conv": {"weight": ("params", "kernel")},
    "se_conv": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "bn": _BN_LEAVES,
    "fc": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
}
_LSTM_KEY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")
_GATES = ("i", "f", "g", "o")
_SE_CONVS = ("conv4", "conv5")


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float32)


def _put(tree: Variables, path: tuple[str, ...], value: np.ndarray) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    if path[-1] in tree:
        raise ValueError(f"two state-dict entries map to {'/'.join(path)}")
    tree[path[-1]] = value


def load_vggface2_pickle(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """Reads the published VGGFace2 weight pickle (written by Python 2, hence latin1).

    Only numpy arrays in dicts/lists are accepted (``safe_pickle``); anything else
    raises ``pickle.UnpicklingError`` naming the file, before any of it is
    executed. A truncated or corrupt file raises ``ValueError`` naming it.
    """
    state = load_arrays_pickle(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of numpy arrays, got {type(state).__name__}")
    return state


def _resnet_module_path(torch_module: str) -> tuple[str, ...]:
    """``layer1.0.downsample.1`` -> (``layer1_0``, ``downsample_bn``); ``bn1`` -> (``bn1``,)."""
    parts = torch_module.split(".")
    if parts[0].startswith("layer") and len(parts) > 2:
        block, rest = f"{parts[0]}_{parts[1]}", parts[2:]
        if rest[:1] == ["downsample"]:
            rest = ["downsample_conv" if rest[1] == "0" else "downsample_bn"]
        return (block, *rest)
    return tuple(parts)


def _resnet_module_kind(path: tuple[str, ...]) -> str | None:
    """``conv``, ``se_conv``, ``bn`` or ``fc`` for a merjax ResNet submodule path, else None."""
    if path == ("fc",):
        return "fc"
    if len(path) == 2 and path[1] in _SE_CONVS:
        return "se_conv"
    match = re.fullmatch(r"(?:downsample_)?(conv|bn)\d*", path[-1])
    return match.group(1) if match else None


def resnet_state_dict_key(collection: str, path: tuple[str, ...]) -> str:
    """The state-dict key of a merjax ResNet variable: the inverse of the import's renaming.

    ``('params', ('layer1_0', 'downsample_bn', 'scale'))`` -> ``layer1.0.downsample.1.weight``.
    """
    *modules, leaf = path
    torch_leaf = {target: name for name, target in
                  _RESNET_LEAVES.get(_resnet_module_kind(tuple(modules)), {}).items()}
    parts = []
    for module in modules:
        block = re.fullmatch(r"(layer\d+)_(\d+)", module)
        if block:
            parts += block.groups()
        elif module.startswith("downsample_"):
            parts += ["downsample", "0" if module == "downsample_conv" else "1"]
        else:
            parts.append(module)
    return ".".join([*parts, torch_leaf.get((collection, leaf), leaf)])


def resnet_variables_from_state_dict(state_dict: Mapping[str, Any], *,
                                     include_fc: bool = True) -> Variables:
    """Returns ``{'params': ..., 'batch_stats': ...}`` for ``merjax.models.ResNet``.

    Args:
      state_dict: ``resnet50_ft``- or ``senet50_ft``-style keys to arrays or tensors;
        ``num_batches_tracked`` entries are ignored.
      include_fc: False drops ``fc.*`` (e.g. the 8631-way identity classifier) for a
        backbone built with ``num_classes=None``.

    Raises ValueError on a key that matches no ResNet variable.
    """
    variables: Variables = {"params": {}, "batch_stats": {}}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked" or (module == "fc" and not include_fc):
            continue
        path = _resnet_module_path(module)
        array = _numpy(value)
        kind = _resnet_module_kind(path)
        target = _RESNET_LEAVES.get(kind, {}).get(leaf)
        is_kernel = kind in ("conv", "se_conv") and leaf == "weight"
        if target is None or is_kernel != (array.ndim == 4):
            raise ValueError(f"unexpected ResNet state-dict key {key!r} of shape {array.shape}")
        if is_kernel:
            array = array.transpose(2, 3, 1, 0)
        elif kind == "fc" and leaf == "weight":
            array = array.T
        collection, name = target
        _put(variables[collection], (*path, name), array)
    return variables


def lstm_params_from_state_dict(state_dict: Mapping[str, Any], prefix: str = "") -> Variables:
    """Returns the params of ``LSTMStack`` / ``BiLSTM`` from a ``torch.nn.LSTM`` state dict.

    Keys ``{prefix}weight_ih_l{k}[_reverse]`` etc. map to modules ``l{k}[_reverse]``;
    other keys are ignored (so a whole model's state dict can be passed with the
    LSTM's ``prefix``). Projection LSTMs (``weight_hr``) are not supported.
    """
    raw: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        match = _LSTM_KEY.fullmatch(key[len(prefix):])
        if match:
            kind, layer, reverse = match.groups()
            raw.setdefault(f"l{layer}{reverse or ''}", {})[kind] = _numpy(value)
    if not raw:
        raise ValueError(f"no LSTM weights under prefix {prefix!r}")
    params: Variables = {}
    for module, weights in raw.items():
        missing = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"} - weights.keys()
        if missing:
            raise ValueError(f"LSTM layer {module} lacks {sorted(missing)}")
        w_ih = np.split(weights["weight_ih"], 4)
        w_hh = np.split(weights["weight_hh"], 4)
        bias = np.split(weights["bias_ih"] + weights["bias_hh"], 4)
        cell: Variables = {}
        for gate, wi, wh, b in zip(_GATES, w_ih, w_hh, bias):
            cell[f"i{gate}"] = {"kernel": wi.T}
            cell[f"h{gate}"] = {"kernel": wh.T, "bias": b}
        params[module] = {"cell": cell}
    return params
