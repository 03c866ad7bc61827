"""Builds seed 001's models from a config.

Config keys (an ``ml_collections.ConfigDict`` or nested mappings):

* ``kind``: ``'frame'`` (Exp-I, ``FrameClassifier``) or ``'clip'`` (Exp-II/III,
  ``ClipClassifier``);
* ``backbone.stage_sizes`` (e.g. ``(3, 4, 6, 3)`` for ResNet-50), ``backbone.width``,
  ``backbone.se_reduction`` (0: ResNet; 16: the VGGFace2 SE-ResNet-50, optional key);
* ``temporal.kind`` (``'lstm'`` | ``'bilstm'``), ``temporal.hidden``,
  ``temporal.layers`` (lstm only), ``temporal.dropout`` (lstm between layers;
  clip only);
* ``head.hidden`` (fc widths before the logits), ``head.dropout``;
* ``dtype`` (``'float32'`` | ``'bfloat16'``): the backbone's compute dtype; the
  recurrence and head always run in float32.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from merjax.models.classifiers import ClipClassifier, FrameClassifier
from merjax.models.heads import MLPHead
from merjax.models.recurrent import BiLSTM, LSTMStack
from merjax.models.resnet import ResNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MODEL_KINDS = ("frame", "clip")
TEMPORAL_KINDS = ("lstm", "bilstm")


def _choice(value: str, allowed: Mapping[str, Any] | tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(allowed)}")
    return value


def _temporal(config: Mapping[str, Any]) -> nn.Module:
    kind = _choice(config["kind"], TEMPORAL_KINDS, "temporal.kind")
    if kind == "lstm":
        return LSTMStack(hidden_size=int(config["hidden"]), num_layers=int(config["layers"]),
                         dropout=float(config["dropout"]))
    return BiLSTM(hidden_size=int(config["hidden"]))


def create_model(config: Mapping[str, Any], num_classes: int, *, frozen_until: str | None = None,
                 input_endpoint: str | None = None) -> nn.Module:
    """Returns an un-initialised ``FrameClassifier`` or ``ClipClassifier``.

    ``frozen_until`` freezes the backbone up to that endpoint (``ResNet.frozen_until``);
    ``input_endpoint`` makes the model take that endpoint's tensor instead of frames
    (the suffix behind a cached prefix). Every variant has the same variables.
    """
    kind = _choice(config["kind"], MODEL_KINDS, "model kind")
    dtype = DTYPES[_choice(config["dtype"], DTYPES, "dtype")]
    backbone = ResNet(stage_sizes=tuple(config["backbone"]["stage_sizes"]),
                      width=int(config["backbone"]["width"]),
                      se_reduction=int(config["backbone"].get("se_reduction", 0)) or None,
                      frozen_until=frozen_until, dtype=dtype)
    head = MLPHead(num_classes=num_classes, hidden_sizes=tuple(config["head"]["hidden"]),
                   dropout=float(config["head"]["dropout"]))
    if kind == "frame":
        return FrameClassifier(backbone=backbone, head=head, input_endpoint=input_endpoint)
    return ClipClassifier(backbone=backbone, temporal=_temporal(config["temporal"]), head=head,
                          input_endpoint=input_endpoint)
