"""Puts published VGGFace2 weights into a ``resnet`` backbone: the importer the registry calls for it.

Seed 001 fine-tunes the VGGFace2 ResNet-50: the model's ``backbone`` variables
come from the published file (``merjax.models.registry.import_backbone_weights``
with ``--config.model.weights``), the rest of the model stays as initialised.
The backbone must be the published network (ResNet-50 stages, width 64, SE or
not as in the file); anything else is named, not silently reshaped.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from merjax.errors import UserError
from merjax.weights.vggface2 import load_vggface2, variable_shapes

Variables = dict[str, Any]


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
