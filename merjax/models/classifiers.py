"""Seed 001's classifiers composed from a backbone, a temporal model and a head.

* ``FrameClassifier`` (Exp-I): one frame -> ResNet features -> head -> logits.
* ``ClipClassifier`` (Exp-II/III): every frame of a clip -> ResNet features ->
  LSTM / BiLSTM -> head -> logits.

Both take RGB frames in [0, 255] (uint8 or float) and apply
``vggface2_preprocess`` themselves. With ``input_endpoint=E`` they take instead
the backbone's output at endpoint E (e.g. ``layer2``, [B,h,w,c] per frame) and
run only the rest: the trainable suffix behind a frozen, cached prefix, or the
part of the network Grad-CAM differentiates. ``backbone_features`` computes that
input from frames, with BatchNorm on running statistics. The backbone is a ``ResNet`` without ``fc``
(it returns ``(features, endpoints)``); its features are cast to float32 so the
recurrence and head run in float32 whatever the backbone's dtype.

Sliding windows (seed 001 cuts clips into overlapping windows of N frames) share
the per-frame encoding: ``ClipClassifier`` encodes every frame of the clip once and
gathers each window's features from the encoded sequence instead of re-encoding
overlapping frames (DESIGN "Speed by design").

Padding: clips are left-aligned, padded at the end, with ``mask`` True on valid
frames. Padded frames are still encoded (the batch has a fixed shape) but never
reach the logits when BatchNorm uses running statistics (``train=False`` or a
frozen backbone). In ``train=True`` BatchNorm's batch statistics include the
padded frames, so they shift the normalisation of the valid ones; this is accepted.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from merjax.models.resnet import vggface2_preprocess


def _run_backbone(backbone: nn.Module, inputs: jax.Array, input_endpoint: str | None, *,
                  train: bool) -> jax.Array:
    """Pooled features of frames, or of endpoint tensors when ``input_endpoint`` is set."""
    if input_endpoint is None:
        feats, _ = backbone(vggface2_preprocess(inputs), train=train)
    else:
        feats, _ = backbone(inputs, train=train, start_at=input_endpoint)
    return feats.astype(jnp.float32)


class FrameClassifier(nn.Module):
    """Frames [B,H,W,3] (or endpoint tensors, see ``input_endpoint``) -> logits [B,C]."""

    backbone: nn.Module
    head: nn.Module
    input_endpoint: str | None = None

    def backbone_features(self, frames: jax.Array, endpoint: str) -> jax.Array:
        """Frames [B,H,W,3] -> the backbone's ``endpoint`` output [B,...], BatchNorm on running statistics."""
        feats, _ = self.backbone(vggface2_preprocess(frames), train=False, stop_at=endpoint)
        return feats

    def __call__(self, frames: jax.Array, *, train: bool) -> jax.Array:
        feats = _run_backbone(self.backbone, frames, self.input_endpoint, train=train)
        return self.head(feats, train=train)


class ClipClassifier(nn.Module):
    """Clips [B,T,H,W,3] with a [B,T] validity mask -> logits [B,C] (or [B,W,C] per window).

    With ``input_endpoint`` set, ``frames`` holds the backbone's endpoint output
    of every frame, [B,T,...], instead of pixels.
    """

    backbone: nn.Module
    temporal: nn.Module
    head: nn.Module
    input_endpoint: str | None = None

    def backbone_features(self, frames: jax.Array, endpoint: str) -> jax.Array:
        """Frames [B,T,H,W,3] -> the backbone's ``endpoint`` output per frame [B,T,...]."""
        flat = einops.rearrange(frames, "b t h w c -> (b t) h w c")
        feats, _ = self.backbone(vggface2_preprocess(flat), train=False, stop_at=endpoint)
        return feats.reshape(frames.shape[:2] + feats.shape[1:])

    def encode(self, frames: jax.Array, *, train: bool) -> jax.Array:
        """Frames [B,T,...] -> per-frame features [B,T,D], one backbone call on B*T frames."""
        flat = frames.reshape((-1,) + frames.shape[2:])
        feats = _run_backbone(self.backbone, flat, self.input_endpoint, train=train)
        return feats.reshape(frames.shape[:2] + feats.shape[1:])

    def classify_features(self, feats: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
        """Features [B,T,D] and left-aligned mask [B,T] -> logits [B,C]."""
        lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)
        _, final = self.temporal(feats, lengths, train=train)
        return self.head(final, train=train)

    def __call__(self, frames: jax.Array, mask: jax.Array, windows: jax.Array | None = None,
                 *, train: bool) -> jax.Array:
        """Logits [B,C]; with ``windows`` int32 [B,W,N] (frame indices into T), logits [B,W,C].

        Window indices must be ascending within a window so that its valid frames
        come first.
        """
        feats = self.encode(frames, train=train)
        if windows is None:
            return self.classify_features(feats, mask, train=train)
        batch = frames.shape[0]
        gather = jax.vmap(lambda seq, idx: seq[idx])
        window_feats = einops.rearrange(gather(feats, windows), "b w n d -> (b w) n d")
        window_mask = einops.rearrange(gather(mask, windows), "b w n -> (b w) n")
        logits = self.classify_features(window_feats, window_mask, train=train)
        return einops.rearrange(logits, "(b w) c -> b w c", b=batch)
