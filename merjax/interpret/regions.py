"""How much of a Grad-CAM heatmap falls on the face's micro-expression-aware regions.

Seed 001 judges Grad-CAM heatmaps by eye: after training they "gather to the
eyes, eyebrows, nose wings, corners of the mouth" (its Figure 4). This module
makes that judgement a number. The regions are a mask of the frame from
``merjax.faces.regions.hull_mask`` (the brows and eyes, the nose and the mouth
as landmark hulls), where merjax's face regions are defined.

Scores of a heatmap H >= 0 against a mask M of the same size:

* ``inside`` = sum(H * M) / sum(H): the fraction of the heatmap's mass in the regions;
* ``lift`` = inside / mean(M): that fraction over the regions' share of the image.
  A uniform heatmap has lift 1; a heatmap entirely inside the regions has lift
  1 / mean(M). An all-zero heatmap has no mass; both scores are then NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


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
