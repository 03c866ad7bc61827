"""Puts published VGGFace2 weights into a ``resnet`` backbone: the importer the registry calls for it.

Seed 001 fine-tunes the VGGFace2 ResNet-50: the model's ``backbone`` variables
come from the published file (``merjax.models.registry.import_backbone_weights``
with ``--config.model.weights``), the rest of the model stays as initialised.
The backbone must be the published network (ResNet-50 stages, width 64, SE or
not as in the file); anything else is named, not silently reshaped.

merjax's own backbone files (``save_backbone``, ``import_merjax_backbone``):
``NAME.msgpack`` holds the backbone's ``{'params', 'batch_stats'}``
(``flax.serialization``) and ``NAME.json`` beside it describes them (format,
the backbone config, the input size and what they were trained on, e.g. the
synthetic pretraining of ``experiments.pretrain``). A file is loaded into a
backbone of the same config and variable shapes only.
"""

from __future__ import annotations

import os
from os import PathLike
from typing import Any, Mapping

import flax.serialization
import jax
import numpy as np

from merjax import files
from merjax.errors import UserError
from merjax.weights.vggface2 import load_vggface2, variable_shapes

Variables = dict[str, Any]
MERJAX_FORMAT = "merjax-backbone/1"
MERJAX_SUFFIX = ".msgpack"
# The backbone config keys a merjax file must share with the configured backbone (besides its name).
ARCHITECTURE_KEYS = ("stage_sizes", "width", "se_reduction")


def import_vggface2(variables: Variables, path: str | PathLike[str], *, se: bool = False) -> Variables:
    """The backbone variables ``{'params', 'batch_stats'}`` read from a VGGFace2 file.

    Args:
      variables: the backbone's current variables (their shapes are checked against the file).
      path: ``resnet50_ft`` / ``senet50_ft`` pickle or Keras ``.h5`` (see ``load_vggface2``).
      se: True for the SE-ResNet-50 (``senet50``) backbone.

    Raises:
      UserError: if the backbone is not the published network (a shape or a variable
        differs; the first difference is named with the settings that fit).
      ValueError: if the file does not match the architecture (``load_vggface2``).
    """
    arch = "senet50" if se else "resnet50"
    loaded = load_vggface2(path, arch, include_fc=False)
    expected, found = variable_shapes(variables), variable_shapes(loaded)
    for collection, key in sorted(expected.keys() | found.keys()):
        leaf = (collection, key)
        if expected.get(leaf) != found.get(leaf):
            raise UserError(
                f"{path}: VGGFace2 {arch} does not fit the configured backbone: "
                f"{collection}/backbone/{'/'.join(key)} is {found.get(leaf, 'absent')} in the file and "
                f"{expected.get(leaf, 'absent')} in the model (set --config.model.backbone.stage_sizes=(3, 4, 6, 3), "
                f"width=64 and se_reduction={16 if se else 0} for published weights)")
    return loaded


def description_path(path: str | PathLike[str]) -> str:
    """The JSON description beside a merjax backbone file (``NAME.msgpack`` -> ``NAME.json``)."""
    return os.path.splitext(os.fspath(path))[0] + ".json"


def architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture part of a backbone config (``config.model.backbone``) as plain JSON values."""
    described: dict[str, Any] = {"name": str(config["name"])}
    for key in ARCHITECTURE_KEYS:
        value = config.get(key, 0 if key == "se_reduction" else None)   # no se_reduction: a plain ResNet
        described[key] = [int(v) for v in value] if isinstance(value, (tuple, list)) else value
    return described


def save_backbone(path: str | PathLike[str], variables: Variables, description: Mapping[str, Any]) -> None:
    """Writes a backbone's variables ``{'params', 'batch_stats'}`` to ``path`` (``.msgpack``) and
    ``description`` (at least ``backbone``: ``architecture(config)``) beside it, both atomically; the
    description is written last, so a file without one was cut short."""
    if not os.fspath(path).endswith(MERJAX_SUFFIX):
        raise ValueError(f"{path}: a merjax backbone file ends in {MERJAX_SUFFIX}")
    if "backbone" not in description:
        raise ValueError("a backbone file's description names its backbone config ('backbone')")
    files.atomic_write_bytes(path, flax.serialization.msgpack_serialize(jax.device_get(dict(variables))))
    files.atomic_write_json(description_path(path), {"format": MERJAX_FORMAT, **description})


def import_merjax_backbone(variables: Variables, path: str | PathLike[str], config: Mapping[str, Any]) -> Variables:
    """The backbone variables ``{'params', 'batch_stats'}`` read from a merjax backbone file (``save_backbone``).

    Args:
      variables: the backbone's current variables (their shapes are checked against the file).
      path: the ``.msgpack`` file; its ``.json`` description must lie beside it.
      config: the configured backbone (``config.model.backbone``).

    Raises:
      UserError: naming the file and the first differing key when its description is missing or of another
        format, it was trained for another backbone config, or a variable differs in shape or is missing
        (never reshaped).
    """
    description = files.read_json(description_path(path), "backbone description")
    if not isinstance(description, dict) or description.get("format") != MERJAX_FORMAT:
        raise UserError(f"{description_path(path)}: not a merjax backbone description (format "
                        f"{description.get('format') if isinstance(description, dict) else None!r}, expected "
                        f"{MERJAX_FORMAT!r})")
    stored, wanted = description.get("backbone", {}), architecture(config)
    for key in sorted(stored.keys() | wanted.keys()):
        if stored.get(key) != wanted.get(key):
            raise UserError(f"{path}: trained for backbone {key}={stored.get(key)!r}, configured "
                            f"{key}={wanted.get(key)!r} (set --config.model.backbone.{key}={stored.get(key)!r}, or "
                            f"use weights trained for this backbone)")
    try:
        with open(path, "rb") as f:
            loaded = flax.serialization.msgpack_restore(f.read())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable merjax backbone file ({error}); write it again "
                        f"(python -m experiments.pretrain)") from None
    expected, found = variable_shapes(variables), variable_shapes(loaded)
    for leaf in sorted(expected.keys() | found.keys()):
        if expected.get(leaf) != found.get(leaf):
            collection, key = leaf
            raise UserError(f"{path}: {collection}/backbone/{'/'.join(key)} is {found.get(leaf, 'absent')} in the "
                            f"file and {expected.get(leaf, 'absent')} in the configured backbone; use weights "
                            f"trained for this backbone")
    return jax.tree.map(np.asarray, loaded)
