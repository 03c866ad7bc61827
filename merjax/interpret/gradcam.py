"""Grad-CAM (Selvaraju et al., ICCV 2017) at any backbone endpoint of a merjax model.

Seed 001 picks the layer l_s from which the VGGFace2 ResNet-50 is retrained by
looking at Grad-CAM heatmaps of its layers, and shows that training moves them
onto the micro-expression-aware regions (its Figure 4). For a target class c,
an endpoint's activations A [h,w,K] and the class logit y^c:

    alpha_k = mean over (i, j) of d y^c / d A^k_ij,    map = ReLU(sum_k alpha_k A^k).

Any backbone works (``merjax.models.backbones.Backbone``): the network is
split at the endpoint; the prefix computes A from the input (the model's
``frame_features``, or ``stop_at`` of a bare backbone) and the suffix (the model
with ``input_endpoint``, or ``start_at``) maps A to the logits, so the gradient
is taken with respect to A itself with one forward and one backward pass of
the suffix. BatchNorm runs on its running statistics, so every example (clip)
is independent and one vector-Jacobian product gives every example's gradient.
A backbone's ``frozen_until`` (a training device that cuts the gradient) is
switched off here: Grad-CAM differentiates through frozen layers too.

For a ``ClipClassifier`` the logit depends on every frame of the clip; each
frame gets its own weights alpha (the spatial mean of that frame's gradient)
and its own map, i.e. Grad-CAM of the frame with the rest of the clip held
fixed. Padded frames (``mask`` False) never reach the logits in evaluation
mode, so their gradient, weights and map are exactly zero.

Maps are returned raw (at the endpoint's resolution, unnormalised);
``resize_maps`` upsamples (bilinear) and normalises them for display and for
scoring against image-sized region masks (``merjax.interpret.regions``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np



class GradCAM(NamedTuple):
    """Grad-CAM of a batch at one endpoint."""

    maps: jax.Array      # [B,h,w] (frame models, bare backbones) or [B,T,h,w] (clip models), >= 0, unnormalised
    logits: jax.Array    # [B,C] of the full model on the inputs
    target: jax.Array    # [B] int32, the class each map explains


def _is_backbone(model: Any) -> bool:
    """True for a bare backbone (it has endpoints itself), False for a model built around one."""
    return hasattr(model, "endpoint_names")


def spatial_endpoints(model: Any) -> tuple[str, ...]:
    """The endpoints of ``model``'s backbone (or of a bare backbone) that have a spatial map."""
    backbone = model if _is_backbone(model) else model.backbone
    return tuple(backbone.spatial_endpoint_names)


def _split(model: Any, variables: Mapping[str, Any], inputs: Mapping[str, Any],
           endpoint: str) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """(endpoint activations A, function A -> logits [B,C]) for a merjax model."""
    inputs = dict(inputs)
    if "windows" in inputs:
        raise ValueError("Grad-CAM explains one logit per clip; pass the clip without 'windows'")
    frames = jnp.asarray(inputs.pop("frames"))
    if _is_backbone(model):
        if "logits" not in model.endpoint_names:
            raise ValueError("Grad-CAM of a bare backbone needs its classifier: a 'logits' endpoint "
                             "(ResNet: set num_classes)")
        suffix = model.clone(frozen_until=None)
        activations, _ = suffix.apply(variables, frames, train=False, stop_at=endpoint)

        def logits_of(a: jax.Array) -> jax.Array:
            logits, _ = suffix.apply(variables, a, train=False, start_at=endpoint)
            return logits

        return activations, logits_of
    if not hasattr(model, "frame_features"):
        raise TypeError(f"Grad-CAM needs a backbone or a model with a backbone and frame_features "
                        f"(e.g. FrameClassifier, ClipClassifier), not {type(model).__name__}")
    frame_shape = frames.shape[-3:]
    activations = model.apply(variables, frames.reshape((-1, *frame_shape)), endpoint, method="frame_features")
    activations = activations.reshape(frames.shape[:-3] + activations.shape[1:])
    suffix = model.clone(input_endpoint=endpoint, backbone=model.backbone.clone(frozen_until=None))

    def logits_of(a: jax.Array) -> jax.Array:
        return suffix.apply(variables, features=a, **inputs, train=False)

    return activations, logits_of


def gradcam(model: Any, variables: Mapping[str, Any], inputs: Mapping[str, Any], endpoint: str,
            target: jax.Array | int | None = None) -> GradCAM:
    """Grad-CAM maps of ``model`` at backbone ``endpoint`` (e.g. ``'layer3'``).

    Args:
      model: a model with a backbone and ``frame_features`` (``FrameClassifier``,
        ``ClipClassifier``), of any backbone, or a bare backbone with a ``logits``
        endpoint (e.g. a ``ResNet`` with ``num_classes``).
      variables: the model's variables (params and batch_stats).
      inputs: the model's keyword inputs (a batch's ``inputs``): ``frames`` (RGB in
        [0, 255], [B,H,W,3] or [B,T,H,W,3]; for a bare backbone its preprocessed
        input, ``backbone.preprocess(frames)``) and, for clip models, ``mask`` [B,T].
      endpoint: a spatial endpoint of the backbone (``spatial_endpoints(model)``);
        static under ``jax.jit``.
      target: the class to explain, per example ([B] ints) or one for all; None
        explains each example's predicted (argmax) class.

    Returns:
      ``GradCAM(maps, logits, target)``; maps are [B,h,w] at the endpoint's
      resolution, or [B,T,h,w] (one per frame, zero on padded frames) for clip models.
    """
    if endpoint not in spatial_endpoints(model):
        raise ValueError(f"Grad-CAM needs a spatial endpoint; got {endpoint!r}, expected one of "
                         f"{spatial_endpoints(model)}")
    activations, logits_of = _split(model, variables, inputs, endpoint)
    activations = activations.astype(jnp.float32)
    logits, pullback = jax.vjp(logits_of, activations)
    logits = logits.astype(jnp.float32)
    batch, num_classes = logits.shape
    if target is None:
        target = jnp.argmax(logits, axis=-1)
    target = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (batch,))
    (grads,) = pullback(jax.nn.one_hot(target, num_classes, dtype=logits.dtype))
    weights = jnp.mean(grads, axis=(-3, -2))                      # alpha: [B,(T,)K]
    maps = jax.nn.relu(jnp.einsum("...hwk,...k->...hw", activations, weights))
    return GradCAM(maps=maps, logits=logits, target=target)


def resize_maps(maps: jax.Array | np.ndarray, size: int | tuple[int, int], *,
                normalise: bool = True) -> jax.Array:
    """Upsamples maps [..., h, w] to the image size [..., H, W] (bilinear, half-pixel centres).

    With ``normalise`` every map is divided by its maximum, so it lies in [0, 1]
    (an all-zero map stays zero). Region scores are invariant to the scale, so
    scoring can skip the normalisation.
    """
    height, width = (size, size) if isinstance(size, int) else size
    maps = jnp.asarray(maps, jnp.float32)
    resized = jax.image.resize(maps, maps.shape[:-2] + (height, width), method="bilinear")
    resized = jnp.maximum(resized, 0.0)
    if normalise:
        peak = jnp.max(resized, axis=(-2, -1), keepdims=True)
        resized = jnp.where(peak > 0, resized / jnp.where(peak > 0, peak, 1.0), 0.0)
    return resized
