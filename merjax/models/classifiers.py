"""Seed 001's classifiers composed from a backbone, a temporal model and a head.

* ``FrameClassifier`` (Exp-I, ``config.model.name='frame_classifier'``): one
  frame -> backbone features -> head -> logits.
* ``ClipClassifier`` (Exp-II/III, ``'clip_classifier'``): every frame of a clip
  -> backbone features -> LSTM / BiLSTM -> head -> logits.

The backbone is any ``merjax.models.backbones.Backbone`` (``config.model.backbone``).
Both classifiers take RGB frames in [0, 255] (uint8 or float) as ``frames`` and
apply the backbone's own ``preprocess``. With ``input_endpoint=E`` they take
instead the keyword input ``features``: the backbone's output at endpoint E
(e.g. ``layer2``, [B,h,w,c] per frame), and run only the rest: the trainable
suffix behind a frozen, cached prefix, or the part of the network Grad-CAM
differentiates. ``frame_features(frames, E)`` computes that input from frames,
with BatchNorm on running statistics. The backbone's features are cast to
float32 so the recurrence and head run in float32 whatever the backbone's dtype.

Sliding windows (seed 001 cuts clips into overlapping windows of N frames) share
the per-frame encoding: ``ClipClassifier`` encodes every frame of the clip once and
gathers each window's features from the encoded sequence instead of re-encoding
overlapping frames (DESIGN "Speed by design").

Padding: clips are left-aligned, padded at the end, with ``mask`` True on valid
frames. Padded frames are still encoded (the batch has a fixed shape) but never
reach the logits when BatchNorm uses running statistics (``train=False`` or a
frozen backbone). In ``train=True`` BatchNorm's batch statistics include the
padded frames, so they shift the normalisation of the valid ones; this is accepted.

Config keys of both (``config.model``): ``head.hidden`` (fc widths before the
logits), ``head.dropout``; of the clip classifier also ``temporal``
(``merjax.models.recurrent.temporal_model``) and ``onset_relative`` (features
relative to each window's first frame; off in the seed).
"""

from __future__ import annotations

from typing import Any, Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from merjax.models import registry
from merjax.models.heads import MLPHead
from merjax.models.recurrent import temporal_model


def _frame_features(backbone: nn.Module, frames: jax.Array, endpoint: str) -> jax.Array:
    """Frames [B,H,W,3] -> the backbone's ``endpoint`` output [B,...], BatchNorm on running statistics."""
    features, _ = backbone(backbone.preprocess(frames), train=False, stop_at=endpoint)
    return features


def _model_input(model: nn.Module, frames: jax.Array | None, features: jax.Array | None) -> jax.Array:
    """``frames``, or ``features`` when the model starts at an ``input_endpoint``; refuses any other mix."""
    wanted = "frames" if model.input_endpoint is None else "features"
    given = {"frames": frames, "features": features}
    if given[wanted] is None or any(value is not None for name, value in given.items() if name != wanted):
        passed = " and ".join(name for name, value in given.items() if value is not None) or "neither"
        raise ValueError(f"{type(model).__name__}(input_endpoint={model.input_endpoint!r}) takes `{wanted}` "
                         f"only, got {passed}")
    return given[wanted]


def _encode(backbone: nn.Module, inputs: jax.Array, input_endpoint: str | None, *, train: bool) -> jax.Array:
    """float32 backbone output of frames [N,H,W,3], or of endpoint tensors [N,...] when ``input_endpoint`` is set."""
    if input_endpoint is None:
        features, _ = backbone(backbone.preprocess(inputs), train=train)
    else:
        features, _ = backbone(inputs, train=train, start_at=input_endpoint)
    return features.astype(jnp.float32)


class FrameClassifier(nn.Module):
    """Frames [B,H,W,3] (or ``features`` at ``input_endpoint``) -> logits [B,C]."""

    backbone: nn.Module
    head: nn.Module
    input_endpoint: str | None = None

    def frame_features(self, frames: jax.Array, endpoint: str) -> jax.Array:
        """Frames [B,H,W,3] -> the backbone's ``endpoint`` output [B,...], BatchNorm on running statistics."""
        return _frame_features(self.backbone, frames, endpoint)

    def __call__(self, frames: jax.Array | None = None, *, features: jax.Array | None = None,
                 train: bool) -> jax.Array:
        encoded = _encode(self.backbone, _model_input(self, frames, features), self.input_endpoint, train=train)
        return self.head(encoded, train=train)


class ClipClassifier(nn.Module):
    """Clips [B,T,H,W,3] (or ``features`` [B,T,...] at ``input_endpoint``) with a [B,T] validity mask
    -> logits [B,C] (or [B,W,C] per window)."""

    backbone: nn.Module
    temporal: nn.Module
    head: nn.Module
    input_endpoint: str | None = None
    # Each window's per-frame features minus those of its first frame before the temporal model: the subject's
    # appearance cancels and only the change from the window's start is left (with windows that start on the
    # onset, e.g. clips resampled to the window's length, the change since the neutral onset).
    onset_relative: bool = False

    def frame_features(self, frames: jax.Array, endpoint: str) -> jax.Array:
        """Frames [B,H,W,3] -> the backbone's ``endpoint`` output [B,...], BatchNorm on running statistics."""
        return _frame_features(self.backbone, frames, endpoint)

    def encode(self, inputs: jax.Array, *, train: bool) -> jax.Array:
        """Frames or endpoint tensors [B,T,...] -> per-frame features [B,T,D], one backbone call on B*T frames."""
        flat = inputs.reshape((-1,) + inputs.shape[2:])
        encoded = _encode(self.backbone, flat, self.input_endpoint, train=train)
        return encoded.reshape(inputs.shape[:2] + encoded.shape[1:])

    def classify_features(self, feats: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
        """Features [B,T,D] and left-aligned mask [B,T] -> logits [B,C]."""
        if self.onset_relative:
            feats = feats - feats[:, :1]
        lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)
        _, final = self.temporal(feats, lengths, train=train)
        return self.head(final, train=train)

    def __call__(self, frames: jax.Array | None = None, mask: jax.Array | None = None,
                 windows: jax.Array | None = None, *, features: jax.Array | None = None,
                 train: bool) -> jax.Array:
        """Logits [B,C]; with ``windows`` int32 [B,W,N] (frame indices into T), logits [B,W,C].

        Window indices must be ascending within a window so that its valid frames
        come first.
        """
        inputs = _model_input(self, frames, features)
        if mask is None:
            raise ValueError("ClipClassifier needs `mask` [B,T] (True on the valid frames of each clip)")
        feats = self.encode(inputs, train=train)
        if windows is None:
            return self.classify_features(feats, mask, train=train)
        batch = inputs.shape[0]
        gather = jax.vmap(lambda seq, idx: seq[idx])
        window_feats = einops.rearrange(gather(feats, windows), "b w n d -> (b w) n d")
        window_mask = einops.rearrange(gather(mask, windows), "b w n -> (b w) n")
        logits = self.classify_features(window_feats, window_mask, train=train)
        return einops.rearrange(logits, "(b w) c -> b w c", b=batch)


def _head(config: Mapping[str, Any], num_classes: int) -> MLPHead:
    return MLPHead(num_classes=num_classes, hidden_sizes=tuple(config["head"]["hidden"]),
                   dropout=float(config["head"]["dropout"]))


@registry.register_model("frame_classifier")
def frame_classifier(config: Mapping[str, Any], num_classes: int, *, frozen_until: str | None,
                     input_endpoint: str | None) -> FrameClassifier:
    """Seed 001's Exp-I model: ``config.model.backbone`` then ``config.model.head``."""
    return FrameClassifier(backbone=registry.create_backbone(config, frozen_until=frozen_until),
                           head=_head(config, num_classes), input_endpoint=input_endpoint)


@registry.register_model("clip_classifier")
def clip_classifier(config: Mapping[str, Any], num_classes: int, *, frozen_until: str | None,
                    input_endpoint: str | None) -> ClipClassifier:
    """Seed 001's Exp-II/III model: ``config.model.backbone`` per frame, ``temporal``, then ``head``."""
    return ClipClassifier(backbone=registry.create_backbone(config, frozen_until=frozen_until),
                          temporal=temporal_model(config["temporal"]), head=_head(config, num_classes),
                          input_endpoint=input_endpoint, onset_relative=bool(config.get("onset_relative", False)))
