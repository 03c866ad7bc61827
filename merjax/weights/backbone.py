"""Puts published VGGFace2 weights into the backbone of a merjax classifier.

Seed 001 fine-tunes the VGGFace2 ResNet-50: the classifier's ``backbone``
variables come from the published file, the temporal model and head stay as
initialised. The classifier's backbone must be the published network (ResNet-50
stages, width 64, SE or not as in the file); anything else is named, not
silently reshaped.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from merjax.weights.vggface2 import load_vggface2, variable_shapes

Variables = dict[str, Any]


def with_vggface2_backbone(variables: Variables, path: str | PathLike[str], *,
                           se: bool = False) -> Variables:
    """Returns ``variables`` with ``params/backbone`` and ``batch_stats/backbone`` from a VGGFace2 file.

    Args:
      variables: a classifier's variables (``FrameClassifier`` / ``ClipClassifier``).
      path: ``resnet50_ft`` / ``senet50_ft`` pickle or Keras ``.h5`` (see ``load_vggface2``).
      se: True for the SE-ResNet-50 (``senet50``) backbone.

    Raises:
      ValueError: if the file does not match the architecture, or the classifier's
        backbone is not the published network (a shape or a variable differs; the
        first difference is named).
    """
    arch = "senet50" if se else "resnet50"
    loaded = load_vggface2(path, arch, include_fc=False)
    collections = ("params", "batch_stats")
    expected = variable_shapes({c: variables[c]["backbone"] for c in collections})
    found = variable_shapes(loaded)
    for collection, key in sorted(expected.keys() | found.keys()):
        leaf = (collection, key)
        if expected.get(leaf) != found.get(leaf):
            raise ValueError(
                f"{path}: VGGFace2 {arch} does not fit the configured backbone: "
                f"{collection}/backbone/{'/'.join(key)} is {found.get(leaf, 'absent')} in the file and "
                f"{expected.get(leaf, 'absent')} in the model (set model.backbone.stage_sizes=(3, 4, 6, 3), "
                f"width=64 and se_reduction={16 if se else 0} for published weights)")
    return {**variables, **{c: {**variables[c], "backbone": loaded[c]} for c in collections}}
