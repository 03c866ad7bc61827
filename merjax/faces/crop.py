"""The face crop every builder stores: one square box from the first frame, fixed for the clip.

Seed 002 computes its regions from the landmarks of a clip's first frame and
keeps the boxes fixed for the whole clip (DESIGN.md, "Example schema"): a
micro-expression is a small motion, and a box that followed the face frame by
frame would add its own jitter. So a builder calls ``face_box`` once, on the
first frame's landmarks, ``crop_frames`` on the whole clip with that box, and
``to_crop_coordinates`` on the landmarks it stores.

Coordinates follow ``merjax.faces.landmarks``: (x, y) pixels with pixel
centres at integers. A crop snaps the box to whole pixels (its left/top corner
and its width/height are rounded), so that a crop without resizing is an exact
slice of the frames, and the coordinate maps use the same snapped box.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from merjax.faces.landmarks import Box


def _check_points(points: Any, name: str) -> np.ndarray:
    """``points`` as float64 [..., N, 2] with N >= 1 and finite values; raises ValueError naming it."""
    array = np.asarray(points)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {array.dtype}")
    if array.ndim < 2 or array.shape[-1] != 2 or array.shape[-2] == 0:
        raise ValueError(f"{name} must have shape [..., N, 2] with N >= 1, got {array.shape}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values")
    return array


def _check_size(size: Any) -> int:
    """``size`` as an int >= 1; raises ValueError naming it otherwise."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return int(size)


def face_box(landmarks: np.ndarray, margin: float) -> Box:
    """A square box around landmarks [N,2], centred on their bounding box's centre.

    Its side is ``max(w, h) * (1 + 2 * margin)`` for the landmarks' bounding
    box ``w`` x ``h``: ``margin`` is the fraction of the longer side added on
    each side of it, so every landmark is at least ``margin * max(w, h)``
    inside the box. (The 68 points reach from the brows to the chin; a margin
    around 0.1-0.2 keeps the forehead and the jaw line.)
    """
    points = _check_points(landmarks, "landmarks")
    if points.ndim != 2:
        raise ValueError(f"landmarks must have shape [N, 2], got {points.shape}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be >= 0, got {margin}")
    low, high = points.min(axis=0), points.max(axis=0)
    side = float((high - low).max()) * (1.0 + 2.0 * margin)
    if side <= 0:
        raise ValueError(f"landmarks span no area (all at {low.tolist()}): cannot make a face box")
    cx, cy = (low + high) / 2
    return Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def frame_box(height: int, width: int) -> Box:
    """The square box, centred on a ``height`` x ``width`` frame, that just holds the whole frame.

    ``crop_frames`` with it letterboxes the frame: scaled with its aspect kept
    so that its longer side fills the output, centred, the shorter axis filled
    out with the frame's replicated edge pixels; ``to_crop_coordinates`` with it
    maps landmarks onto that output. Builders use it to store full frames
    instead of face crops (``FaceOptions.full_frame``).
    """
    height, width = _check_size(height), _check_size(width)
    side = max(height, width)
    # The frame covers [-0.5, width - 0.5] x [-0.5, height - 0.5] (pixel centres at integers).
    left, top = (width - side) / 2 - 0.5, (height - side) / 2 - 0.5
    return Box(left, top, left + side, top + side)


def pixel_region(box: Box) -> tuple[int, int, int, int]:
    """The whole-pixel region (x0, y0, width, height) that a crop with ``box`` cuts: pixels
    x0 .. x0 + width - 1 and y0 .. y0 + height - 1, each side at least 1."""
    x0, y0 = math.floor(box.left + 0.5), math.floor(box.top + 0.5)
    width, height = max(1, math.floor(box.width + 0.5)), max(1, math.floor(box.height + 0.5))
    return x0, y0, width, height


def crop_frames(frames: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Crops the same ``box`` from every frame of uint8 [T,H,W,3] and resizes it to [T,size,size,3].

    Resizing uses ``cv2.INTER_AREA`` when the region shrinks on both axes and
    ``cv2.INTER_LINEAR`` otherwise. Where the box reaches outside the frame,
    the frame's border pixels are repeated (edge replication, like
    ``np.pad(mode='edge')``): the box is never shrunk or shifted to fit, so
    the crop's scale and centre stay those asked for. A non-square box is
    stretched to the square output.

    Raises:
      ValueError: on bad shapes, dtypes or size, or when the box does not
        overlap the frames at all.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got dtype {frames.dtype} and shape {frames.shape}")
    size = _check_size(size)
    x0, y0, width, height = pixel_region(box)
    frame_height, frame_width = frames.shape[1:3]
    sx0, sx1 = max(x0, 0), min(x0 + width, frame_width)
    sy0, sy1 = max(y0, 0), min(y0 + height, frame_height)
    if sx1 <= sx0 or sy1 <= sy0:
        raise ValueError(f"box {box} does not overlap the frames of size {frame_width}x{frame_height}")
    region = frames[:, sy0:sy1, sx0:sx1]
    pads = ((0, 0), (sy0 - y0, y0 + height - sy1), (sx0 - x0, x0 + width - sx1), (0, 0))
    if any(p for pair in pads for p in pair):
        region = np.pad(region, pads, mode="edge")
    return resize_frames(region, (size, size))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes every frame of [T,h,w,C] to [T,height,width,C] for ``size`` = (width, height), dtype kept.

    ``cv2.INTER_AREA`` when the frames shrink on both axes (it averages every
    source pixel in), ``cv2.INTER_LINEAR`` otherwise; frames already at the size
    come back unchanged.
    """
    if len(size) != 2:
        raise ValueError(f"size must be (width, height), got {size!r}")
    width, height = (_check_size(v) for v in size)
    frames = np.asarray(frames)
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(frames)
    shrinks = frames.shape[2] > width and frames.shape[1] > height
    interpolation = cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR
    out = np.empty((len(frames), height, width, frames.shape[3]), frames.dtype)
    for t, frame in enumerate(frames):
        out[t] = cv2.resize(frame, (width, height), interpolation=interpolation).reshape(out.shape[1:])
    return out


def to_crop_coordinates(points: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Maps frame pixel coordinates [..., N, 2] to those of ``crop_frames(frames, box, size)``.

    Pixel centres map to pixel centres, as in ``cv2.resize``:
    u = (x - x0 + 0.5) * size / width - 0.5 for the snapped region (``pixel_region``).
    """
    array, size = _check_points(points, "points"), _check_size(size)
    x0, y0, width, height = pixel_region(box)
    origin, extent = np.array([x0, y0], np.float64), np.array([width, height], np.float64)
    return ((array - origin + 0.5) * (size / extent) - 0.5).astype(np.float32)


def from_crop_coordinates(points: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The inverse of ``to_crop_coordinates``: crop pixel coordinates back to frame pixels."""
    array, size = _check_points(points, "points"), _check_size(size)
    x0, y0, width, height = pixel_region(box)
    origin, extent = np.array([x0, y0], np.float64), np.array([width, height], np.float64)
    return ((array + 0.5) * (extent / size) - 0.5 + origin).astype(np.float32)
