"""Augmentation on the host: flips and rotations of clips with their landmarks, class-balanced resampling.

Seed 001 (§4.2, Table 1) augments its frame-level classifier by flipping and
random rotation, and evens out the imbalanced classes with per-class
multipliers that bring every class to about the same number of samples
(about 15000 frames each in Table 1). A clip is transformed as a whole (the
same flip and angle for every frame) so that motion between frames, the
micro-expression signal, is untouched; landmarks follow the pixels so that
regions of interest stay on the face. A sample with several image streams
(the frames and region crops of seed 002) gets one draw for all of them, and a
flip swaps the streams of mirrored regions (left eye <-> right eye).
Augmentation runs inside each training fold only (§4.6).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from merjax.faces import ibug68
from merjax.faces.ibug68 import NUM_LANDMARKS

LANDMARKS = "landmarks"    # the entry of a sample's streams holding landmarks, pixel coordinates of "frames"


IBUG68_MIRROR = ibug68.MIRROR_PERMUTATION    # the renumbering of a flipped face's landmarks


def hflip(
    frames: np.ndarray, landmarks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirrors frames [..., H, W, C] left-right; landmarks [..., 68, 2] follow.

    A landmark's x becomes W-1-x (pixel centres at integer coordinates) and the
    points are renumbered with ``IBUG68_MIRROR`` so that, e.g., point 36 is
    still the right eye's outer corner of the mirrored face.
    """
    frames = np.asarray(frames)
    _check_frames(frames)
    flipped = frames[..., ::-1, :].copy()
    if landmarks is None:
        return flipped, None
    return flipped, mirror_landmarks(landmarks, frames.shape[-2])


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks [..., 68, 2] of an image ``width`` pixels wide, after a left-right flip of the image."""
    points = _checked_landmarks(landmarks)
    mirrored = points.copy()
    mirrored[..., 0] = width - 1 - points[..., 0]
    return mirrored[..., IBUG68_MIRROR, :]


def rotation_matrix(angle_degrees: float, height: int, width: int) -> np.ndarray:
    """Returns the 2x3 affine matrix rotating by ``angle_degrees`` about the image centre.

    Positive angles turn the image counter-clockwise as displayed (OpenCV's
    convention); a point (x, y) goes to ``matrix @ (x, y, 1)``.
    """
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    return cv2.getRotationMatrix2D(centre, float(angle_degrees), 1.0)


def rotate(
    frames: np.ndarray, angle_degrees: float, landmarks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rotates frames [T, H, W, C] or [H, W, C] about the centre; landmarks [..., 68, 2] follow.

    Bilinear interpolation with replicated borders, so no black corners
    appear; the dtype is kept.
    """
    frames = np.asarray(frames)
    _check_frames(frames)
    height, width = frames.shape[-3:-1]
    matrix = rotation_matrix(angle_degrees, height, width)
    clip = frames.reshape((-1,) + frames.shape[-3:])
    rotated = np.stack([
        cv2.warpAffine(np.ascontiguousarray(frame), matrix, (width, height), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE).reshape(frame.shape)
        for frame in clip
    ]).reshape(frames.shape)
    if landmarks is None:
        return rotated, None
    return rotated, rotate_landmarks(landmarks, angle_degrees, height, width)


def rotate_landmarks(landmarks: np.ndarray, angle_degrees: float, height: int, width: int) -> np.ndarray:
    """Landmarks [..., 68, 2] of a ``height`` x ``width`` image, after ``rotate`` turned the image."""
    points = _checked_landmarks(landmarks)
    matrix = rotation_matrix(angle_degrees, height, width)
    return points @ matrix[:, :2].T.astype(points.dtype) + matrix[:, 2].astype(points.dtype)


def _partners(streams: Mapping[str, np.ndarray], mirror_pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Stream -> the stream it turns into under a flip, for the pairs present in ``streams``."""
    partner: dict[str, str] = {}
    for left, right in mirror_pairs:
        present = [name for name in (left, right) if name in streams]
        if len(present) == 1:
            raise ValueError(f"mirror pair ({left!r}, {right!r}): the sample has {present[0]!r} but not its partner")
        if present and streams[left].shape != streams[right].shape:
            raise ValueError(f"mirror pair ({left!r}, {right!r}) has shapes {streams[left].shape} and "
                             f"{streams[right].shape}; a flip swaps them, so they must agree")
        if present:
            partner[left], partner[right] = right, left
    return partner


def _frames_size(streams: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(height, width) of the ``frames`` stream, whose pixel coordinates the landmarks are."""
    if "frames" not in streams:
        raise ValueError(f"{LANDMARKS!r} are pixel coordinates of 'frames', which the sample lacks")
    height, width = np.shape(streams["frames"])[-3:-1]
    return int(height), int(width)


def flip_streams(streams: Mapping[str, np.ndarray],
                 mirror_pairs: Sequence[tuple[str, str]] = ()) -> dict[str, np.ndarray]:
    """Mirrors every image stream of a sample left-right and swaps the streams of each mirror pair.

    A mirrored face has its left eye where its right eye was: the crop of the
    left-eye region, mirrored, is the right-eye region of the mirrored face, so
    the two streams of a pair (e.g. ``region_left_eye``, ``region_right_eye``)
    trade places. An entry ``landmarks`` ([..., 68, 2], pixel coordinates of
    ``frames``) is mirrored and renumbered (``IBUG68_MIRROR``).

    Args:
      streams: image streams [..., H, W, C] by name, and optionally ``landmarks``.
      mirror_pairs: (left, right) stream names; a pair absent from ``streams`` is skipped.
    """
    partner = _partners(streams, mirror_pairs)
    flipped = {partner.get(name, name): hflip(array)[0] for name, array in streams.items() if name != LANDMARKS}
    if LANDMARKS in streams:
        flipped[LANDMARKS] = mirror_landmarks(streams[LANDMARKS], _frames_size(streams)[1])
    return {name: flipped[name] for name in streams}


def rotate_streams(streams: Mapping[str, np.ndarray], angle_degrees: float) -> dict[str, np.ndarray]:
    """Rotates every image stream of a sample by ``angle_degrees``, each about its own centre.

    An entry ``landmarks`` follows the rotation of ``frames``.
    """
    rotated = {name: rotate(array, angle_degrees)[0] for name, array in streams.items() if name != LANDMARKS}
    if LANDMARKS in streams:
        rotated[LANDMARKS] = rotate_landmarks(streams[LANDMARKS], angle_degrees, *_frames_size(streams))
    return {name: rotated[name] for name in streams}


def random_flip_rotate_streams(
    streams: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    *,
    max_angle: float = 10.0,
    flip_prob: float = 0.5,
    mirror_pairs: Sequence[tuple[str, str]] = (),
) -> dict[str, np.ndarray]:
    """Flips with probability ``flip_prob`` (``flip_streams``), then rotates by an angle uniform in
    [-max_angle, max_angle] (``rotate_streams``).

    One flip decision and one angle serve every stream and every frame of the
    sample, so motion between frames and the geometry between streams are kept.
    """
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
    if max_angle < 0:
        raise ValueError(f"max_angle must be >= 0, got {max_angle}")
    flip = rng.random() < flip_prob
    angle = rng.uniform(-max_angle, max_angle)
    out = flip_streams(streams, mirror_pairs) if flip else dict(streams)
    return rotate_streams(out, angle) if angle else out


def per_class_counts(labels: np.ndarray | Sequence[int], num_classes: int) -> np.ndarray:
    """Returns int64 [num_classes] example counts; a label outside 0..num_classes-1 raises."""
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    outside = label_array[(label_array < 0) | (label_array >= num_classes)]
    if outside.size:
        raise ValueError(f"label {outside[0]} is outside 0..{num_classes - 1}")
    return np.bincount(label_array, minlength=num_classes).astype(np.int64)


def balanced_multipliers(counts: Mapping[int, int] | Sequence[int], target: int) -> dict[int, float]:
    """Returns target / count per class: how many times each class's samples are used (Table 1).

    ``counts`` maps class -> count, or lists counts in class order.

    Raises:
      ValueError: naming the class whose count is 0 or negative, or if target < 1.
    """
    if target < 1:
        raise ValueError(f"target must be >= 1, got {target}")
    count_of = dict(counts.items()) if isinstance(counts, Mapping) else dict(enumerate(counts))
    for label, count in count_of.items():
        if count <= 0:
            raise ValueError(f"class {label} has {count} samples; it cannot be brought to {target}")
    return {int(label): target / int(count) for label, count in count_of.items()}


def balanced_resample(
    labels: np.ndarray | Sequence[int],
    target_per_class: int,
    rng: np.random.Generator,
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """Returns sorted int64 indices into ``labels`` in which every class occurs ``target_per_class`` times.

    With m = target / count for a class, each of its samples is used floor(m)
    or ceil(m) times: every sample floor(m) times, then a seeded random subset
    of them once more for the remainder. Shuffle the result per epoch.

    Raises:
      ValueError: if ``num_classes`` is given and a class in 0..num_classes-1
        has no sample (a class is never silently dropped), or target < 1.
    """
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if target_per_class < 1:
        raise ValueError(f"target_per_class must be >= 1, got {target_per_class}")
    classes = np.unique(label_array)
    if num_classes is not None:
        counts = per_class_counts(label_array, num_classes)
        if (counts == 0).any():
            raise ValueError(f"class {int(np.flatnonzero(counts == 0)[0])} has no sample to resample")
        classes = np.arange(num_classes)
    chosen = []
    for label in classes:
        members = np.flatnonzero(label_array == label)
        repeats, remainder = divmod(target_per_class, len(members))
        chosen.append(np.tile(members, repeats))
        chosen.append(rng.choice(members, size=remainder, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim < 3:
        raise ValueError(f"frames must be [..., H, W, C], got shape {frames.shape}")


def _checked_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks)
    if points.ndim < 2 or points.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be [..., {NUM_LANDMARKS}, 2], got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float32)
    return points
