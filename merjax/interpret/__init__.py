"""Interpretation: Grad-CAM at any backbone endpoint, face-region scores of heatmaps, overlays.

Seed 001 uses Grad-CAM to choose the layer l_s from which the VGGFace2 ResNet-50
is retrained and to show that training focuses the network on the
micro-expression-aware regions (``merjax.faces.regions.hull_mask``);
``experiments/gradcam_layers.py`` turns that choice into a measurement with
this package.
"""

from merjax.interpret.display import overlay
from merjax.interpret.gradcam import GradCAM, gradcam, resize_maps, spatial_endpoints
from merjax.interpret.regions import RegionScores, region_scores

__all__ = [
    "GradCAM",
    "RegionScores",
    "gradcam",
    "overlay",
    "region_scores",
    "resize_maps",
    "spatial_endpoints",
]
