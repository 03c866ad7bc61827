"""Heatmaps blended onto frames for display (Grad-CAM figures such as seed 001's Figure 4)."""

from __future__ import annotations

import matplotlib
import numpy as np

from merjax.interpret.gradcam import resize_maps


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blends a heatmap, coloured with ``colormap``, onto an RGB image.

    Args:
      image: [H,W,3] uint8 RGB.
      heatmap: [h,w] >= 0 at any resolution; upsampled bilinearly to [H,W] and
        divided by its maximum (blue: 0, red: the maximum).
      alpha: the heatmap's weight in the blend.

    Returns:
      [H,W,3] uint8 RGB, ``(1 - alpha) * image + alpha * colour(heatmap)``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    levels = np.asarray(resize_maps(np.asarray(heatmap), image.shape[:2]))
    colours = matplotlib.colormaps[colormap](levels)[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
