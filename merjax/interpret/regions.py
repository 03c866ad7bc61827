"""Micro-expression-aware face regions from 68 landmarks, and how much of a heatmap falls in them.

Seed 001 judges Grad-CAM heatmaps by eye: after training they "gather to the
eyes, eyebrows, nose wings, corners of the mouth" (its Figure 4). This module
makes that judgement a number. The regions are the convex hulls of landmark
groups of the iBUG 68-point layout (0-based indices; "right" is the subject's
right, on the image's left):

==================  ==========================================  =========================
region              landmarks                                   covers
==================  ==========================================  =========================
``right_brow_eye``  17-21 (right brow) + 36-41 (right eye)      AU1/2/4 brows, AU6/7 lids
``left_brow_eye``   22-26 (left brow) + 42-47 (left eye)        the same, left side
``nose``            27-30 (bridge) + 31-35 (nostrils, wings)    AU9 nose wrinkler, wings
``mouth``           48-59 (outer lip, corners 48 and 54)        AU12/14/15/20/25 lips, corners
==================  ==========================================  =========================

The jaw line (0-16) and the inner lip (60-67, inside the outer lip's hull) are
not used. Every hull is dilated by ``margin`` times the face size (the
distance between the eye centres, 36-41 and 42-47), so that skin that moves
with a feature (nose wings beside the nostrils, the furrow beside a mouth
corner) counts as inside. A pixel (index coordinates: pixel (x, y) has its
centre at (x, y), the convention of the landmarks in a ``ClipSet``) is in the
mask when its centre is inside a hull or within the margin of it.

Scores of a heatmap H >= 0 against a mask M of the same size:

* ``inside`` = sum(H * M) / sum(H): the fraction of the heatmap's mass in the regions;
* ``lift`` = inside / mean(M): that fraction over the regions' share of the image.
  A uniform heatmap has lift 1; a heatmap entirely inside the regions has lift
  1 / mean(M). An all-zero heatmap has no mass; both scores are then NaN.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

NUM_LANDMARKS = 68
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
REGION_GROUPS: Mapping[str, tuple[int, ...]] = {
    "right_brow_eye": (*range(17, 22), *RIGHT_EYE),
    "left_brow_eye": (*range(22, 27), *LEFT_EYE),
    "nose": tuple(range(27, 36)),
    "mouth": tuple(range(48, 60)),
}
DEFAULT_MARGIN = 0.15   # of the inter-ocular distance


def face_size(landmarks: np.ndarray) -> float:
    """The distance between the centres of the two eyes, in pixels, of landmarks [68,2]."""
    landmarks = np.asarray(landmarks, np.float64)
    return float(np.linalg.norm(landmarks[list(RIGHT_EYE)].mean(0) - landmarks[list(LEFT_EYE)].mean(0)))


def _distance_to_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance of points [N,2] to a convex polygon [V,2] (vertices in order); 0 inside it."""
    start, end = polygon, np.roll(polygon, -1, axis=0)
    edge = end - start                                            # [V,2]
    offset = points[:, None, :] - start[None]                     # [N,V,2]
    cross = edge[None, :, 0] * offset[..., 1] - edge[None, :, 1] * offset[..., 0]
    inside = np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)
    along = np.clip(np.einsum("nvd,vd->nv", offset, edge) / np.maximum((edge**2).sum(-1), 1e-12), 0.0, 1.0)
    nearest = start[None] + along[..., None] * edge[None]
    distance = np.linalg.norm(points[:, None, :] - nearest, axis=-1).min(axis=1)
    return np.where(inside, 0.0, distance)


def region_mask(landmarks: np.ndarray, size: int | tuple[int, int], *, margin: float = DEFAULT_MARGIN,
                groups: Mapping[str, Sequence[int]] = REGION_GROUPS) -> np.ndarray:
    """Boolean mask [H,W] of the union of the groups' convex hulls dilated by ``margin`` x face size.

    Args:
      landmarks: [68,2] (x, y) in pixels of the image the mask is for.
      size: the image size, ``S`` or ``(H, W)``.
    """
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected landmarks [{NUM_LANDMARKS},2], got {landmarks.shape}")
    scale = face_size(landmarks)
    if not np.isfinite(landmarks).all() or scale <= 0:
        raise ValueError("landmarks are missing or degenerate (the eyes coincide)")
    height, width = (size, size) if isinstance(size, int) else size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x.ravel(), y.ravel()], axis=-1).astype(np.float64)
    mask = np.zeros(height * width, bool)
    for indices in groups.values():
        hull = cv2.convexHull(landmarks[list(indices)].astype(np.float32))[:, 0, :].astype(np.float64)
        mask |= _distance_to_polygon(pixels, hull) <= margin * scale
    return mask.reshape(height, width)


def region_masks(landmarks: np.ndarray, size: int | tuple[int, int], *, margin: float = DEFAULT_MARGIN,
                 groups: Mapping[str, Sequence[int]] = REGION_GROUPS) -> np.ndarray:
    """``region_mask`` of each of landmarks [N,68,2]: [N,H,W] bool."""
    return np.stack([region_mask(points, size, margin=margin, groups=groups) for points in landmarks])


class RegionScores(NamedTuple):
    inside: jax.Array    # [...] fraction of each heatmap's mass inside the regions (NaN if no mass)
    lift: jax.Array      # [...] inside / the regions' area fraction (1 = uniform)
    area: jax.Array      # [...] the regions' area fraction of the image


def region_scores(heatmaps: jax.Array | np.ndarray, masks: jax.Array | np.ndarray) -> RegionScores:
    """Scores heatmaps [..., H, W] (>= 0, at the masks' size) against region masks [..., H, W]."""
    heatmaps = jnp.asarray(heatmaps, jnp.float32)
    masks = jnp.asarray(masks, jnp.float32)
    if heatmaps.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"heatmaps {heatmaps.shape} and masks {masks.shape} differ in size; "
                         f"upsample the maps first (resize_maps)")
    mass = jnp.sum(heatmaps, axis=(-2, -1))
    inside = jnp.sum(heatmaps * masks, axis=(-2, -1)) / jnp.where(mass > 0, mass, jnp.nan)
    area = jnp.mean(masks, axis=(-2, -1))
    return RegionScores(inside=inside, lift=inside / area, area=jnp.broadcast_to(area, inside.shape))
