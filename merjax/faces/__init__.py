"""Face boxes, 68-point landmarks (dlib, optional 2D-FAN) and the fixed per-clip face crop, for the builders;
face regions (``merjax.faces.regions``) and the iBUG-68 index groups (``merjax.faces.ibug68``)."""

from merjax.faces.crop import (
    crop_frames,
    face_box,
    frame_box,
    from_crop_coordinates,
    pixel_region,
    to_crop_coordinates,
)
from merjax.faces.landmarks import (
    Box,
    DlibLandmarks,
    FanLandmarks,
    FirstFace,
    LandmarkDetector,
    first_face,
    landmarks_in,
    make_detector,
    pad_image,
)

__all__ = [
    "Box", "DlibLandmarks", "FanLandmarks", "FirstFace", "LandmarkDetector", "crop_frames", "face_box",
    "first_face", "frame_box", "from_crop_coordinates", "landmarks_in", "make_detector", "pad_image",
    "pixel_region", "to_crop_coordinates",
]
