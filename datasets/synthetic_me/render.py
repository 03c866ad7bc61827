"""Renderer of synthetic micro-expression clips: parametric faces, action units, nuisances.

Licensed micro-expression databases cannot ship, so merjax trains by default on
clips rendered here. The generative model is built so that the label lives only
in *small, local, temporal* changes:

* a face is drawn once per subject from a 68-point template (iBUG layout: jaw
  0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) with an identity
  (shape, skin tone, brows, eyes, lips, lighting, freckles and a fixed
  high-frequency skin texture, so that sub-pixel motion changes pixel values);
* an expression is a sum of action-unit (AU) displacement fields on the
  landmarks (plus five skin anchors: two cheeks, three on the forehead), scaled
  to a per-clip apex amplitude of sub-pixel to a few pixels and modulated by
  an onset -> apex -> offset envelope that is zero on the first frame;
* every frame is a piecewise-affine warp of the neutral texture: the control
  points are triangulated once on the template, each output pixel is mapped
  through the affine map of its triangle back into the neutral image, and the
  map is sampled with ``cv2.remap``;
* nuisances larger than the signal are composed into the same warp or added
  after it: per-clip crop jitter, head drift (random-walk translation, rotation
  and scale), blinks, brightness flicker and sensor noise.

Everything is pure numpy + cv2 and deterministic given the ``numpy`` generators
passed in; nothing here knows about TFDS.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import cv2
import numpy as np

from merjax.faces.ibug68 import NUM_LANDMARKS

REFERENCE_SIZE = 128  # amplitudes and drifts are specified in pixels of a 128x128 crop

# Skin anchors appended after the 68 landmarks: they move with some AUs (cheeks
# with AU6/AU12) or stay put (forehead), so that skin between features deforms.
CHEEK_RIGHT, CHEEK_LEFT, FOREHEAD_RIGHT, FOREHEAD_MID, FOREHEAD_LEFT = range(68, 73)
NUM_CONTROL = 73

RIGHT_EYE = np.arange(36, 42)  # the subject's right eye, on the image's left
LEFT_EYE = np.arange(42, 48)
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS_FACING = np.array([41, 40, 47, 46])  # the lower-lid point under each upper-lid point
OUTER_MOUTH = np.arange(48, 60)
INNER_MOUTH = np.arange(60, 68)
RIGHT_BROW = np.arange(17, 22)
LEFT_BROW = np.arange(22, 27)
JAW = np.arange(0, 17)

# Mirror partner of every control point (image-left <-> image-right).
MIRROR = np.array(
    list(range(16, -1, -1))                      # jaw
    + list(range(26, 16, -1))                    # brows
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]       # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer mouth
    + [64, 63, 62, 61, 60, 67, 66, 65]           # inner mouth
    + [CHEEK_LEFT, CHEEK_RIGHT, FOREHEAD_LEFT, FOREHEAD_MID, FOREHEAD_RIGHT])


def _template_half() -> dict[int, tuple[float, float]]:
    """Neutral positions, in units of the crop, of the image-left half and the midline."""
    jaw = {}
    for i in range(9):  # 0 (image left, eye height) .. 8 (chin); a squarish lower face
        angle = np.pi - np.pi * i / 16
        jaw[i] = (0.5 + 0.395 * np.cos(angle), 0.40 + 0.555 * np.sin(angle) ** 0.8)
    return {
        **jaw,
        17: (0.170, 0.318), 18: (0.225, 0.286), 19: (0.290, 0.276), 20: (0.355, 0.283), 21: (0.425, 0.300),
        27: (0.500, 0.380), 28: (0.500, 0.445), 29: (0.500, 0.510), 30: (0.500, 0.575),
        31: (0.430, 0.625), 32: (0.465, 0.640), 33: (0.500, 0.648),
        36: (0.250, 0.410), 37: (0.295, 0.383), 38: (0.355, 0.381), 39: (0.405, 0.412),
        40: (0.357, 0.432), 41: (0.297, 0.433),
        48: (0.355, 0.750), 49: (0.400, 0.724), 50: (0.458, 0.705), 51: (0.500, 0.711),
        59: (0.402, 0.786), 58: (0.452, 0.803), 57: (0.500, 0.808),
        60: (0.382, 0.750), 61: (0.445, 0.741), 62: (0.500, 0.743),
        67: (0.445, 0.759), 66: (0.500, 0.761),
        CHEEK_RIGHT: (0.275, 0.575), FOREHEAD_RIGHT: (0.300, 0.150), FOREHEAD_MID: (0.500, 0.125),
    }


@functools.cache
def template() -> np.ndarray:
    """The neutral, symmetric control points [73,2] (68 landmarks then 5 anchors), in crop units."""
    points = np.zeros((NUM_CONTROL, 2))
    for index, (x, y) in _template_half().items():
        points[index] = (x, y)
        points[MIRROR[index]] = (1.0 - x, y)
    return points


def _border_points() -> np.ndarray:
    """Points on the crop border and on a wide outer frame, so that every pixel lies in a triangle
    even after the head has drifted or rotated."""
    # Crop corners and edge midpoints, except the bottom middle: the chin comes close to it.
    ring = [(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (1.0, 1.0)]
    outer = [(x, y) for x in (-0.6, 0.5, 1.6) for y in (-0.6, 0.5, 1.6) if (x, y) != (0.5, 0.5)]
    return np.asarray(ring + outer, np.float64)


@functools.cache
def triangulation() -> np.ndarray:
    """Delaunay triangles [K,3] over the template's control points followed by the border points."""
    points = np.concatenate([template(), _border_points()]) * 1000.0
    subdiv = cv2.Subdiv2D((-1000, -1000, 3600, 3600))
    subdiv.insert([tuple(map(float, p)) for p in points])
    corners = subdiv.getTriangleList().reshape(-1, 3, 2)
    distance = np.linalg.norm(corners[:, :, None, :] - points[None, None, :, :], axis=-1)
    triangles = distance.argmin(axis=-1)
    if not np.allclose(distance.min(axis=-1), 0.0, atol=1e-3):
        raise RuntimeError("Subdiv2D returned a vertex that is not an input point")
    return _counter_clockwise(triangles, points)


def _counter_clockwise(triangles: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Orders every triangle's vertices so that its signed area (y down) is positive."""
    flipped = signed_areas(points, triangles) < 0
    triangles = triangles.copy()
    triangles[flipped] = triangles[flipped][:, [0, 2, 1]]
    return triangles


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed area of every triangle; a sign change between two point sets is a fold-over."""
    a, b, c = (points[triangles[:, i]] for i in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def with_border(control_points: np.ndarray, size: int) -> np.ndarray:
    """Appends the border points, in pixels of a ``size`` crop, to control points in pixels."""
    return np.concatenate([control_points, _border_points() * size])


# --------------------------------------------------------------------------- #
# Piecewise-affine warp.
# --------------------------------------------------------------------------- #

def _affine_maps(source: np.ndarray, target: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Per triangle, the 3x2 matrix M with [x, y, 1] @ M = source point, for a target point (x, y)."""
    target_rows = np.concatenate([target[triangles], np.ones(triangles.shape + (1,))], axis=-1)
    return np.linalg.solve(target_rows, source[triangles])


def _triangle_index_image(target: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """Rasterises the target triangles: each pixel holds 1 + the index of its triangle (0: none)."""
    if len(triangles) >= np.iinfo(np.uint16).max:
        raise ValueError(f"too many triangles for a uint16 index image: {len(triangles)}")
    index_image = np.zeros((size, size), np.uint16)
    fixed_point = np.round(target[triangles] * 16).astype(np.int32)  # 4 fractional bits
    for k, corners in enumerate(fixed_point):
        cv2.fillConvexPoly(index_image, corners, k + 1, cv2.LINE_8, 4)
    return index_image


def piecewise_affine_maps(source: np.ndarray, target: np.ndarray, triangles: np.ndarray,
                          size: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps that move the image content at ``source`` points to ``target`` points.

    Each output pixel is located in its target triangle and mapped, with the
    triangle's barycentric (affine) coordinates, to the same position in the
    source triangle. Pixels outside every triangle map to themselves.
    """
    identity = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    matrices = np.concatenate([identity[None], _affine_maps(source, target, triangles)])
    index_image = _triangle_index_image(target, triangles, size)
    per_pixel = matrices[index_image]  # [S,S,3,2]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    map_x = x * per_pixel[..., 0, 0] + y * per_pixel[..., 1, 0] + per_pixel[..., 2, 0]
    map_y = x * per_pixel[..., 0, 1] + y * per_pixel[..., 1, 1] + per_pixel[..., 2, 1]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def warp(image: np.ndarray, source: np.ndarray, target: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Piecewise-affine warp of a square ``image`` taking ``source`` points [P,2] (x, y pixels)
    to ``target`` points; ``triangles`` index both point sets."""
    map_x, map_y = piecewise_affine_maps(source, target, triangles, image.shape[0])
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


# --------------------------------------------------------------------------- #
# Identity and the neutral face.
# --------------------------------------------------------------------------- #

SKIN_LIGHT = np.array([0.94, 0.80, 0.70])
SKIN_DARK = np.array([0.42, 0.28, 0.20])
IRIS_COLOURS = np.array([[0.30, 0.18, 0.10], [0.15, 0.09, 0.05], [0.30, 0.45, 0.65],
                         [0.30, 0.42, 0.25], [0.45, 0.35, 0.15]])
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.32, 0.18],
                         [0.04, 0.04, 0.05], [0.55, 0.45, 0.30]])


@dataclasses.dataclass(frozen=True)
class Identity:
    """One synthetic subject: neutral control points (crop units) and appearance."""

    control_points: np.ndarray    # [73,2]
    skin: np.ndarray              # RGB in [0,1]
    lips: np.ndarray
    iris: np.ndarray
    hair: np.ndarray
    background: np.ndarray
    brow_thickness: float         # crop units
    brow_darkness: float          # how much darker the brows are than a hair/skin mix, 0..1
    light_angle: float            # direction of the lighting gradient, radians
    light_strength: float
    freckles: np.ndarray          # [N,3]: x, y (crop units), radius (crop units)
    texture_seed: int


def _identity_shape(rng: np.random.Generator) -> np.ndarray:
    """Neutral control points of one subject: the template with its proportions changed."""
    points = template().copy()
    centre = np.array([0.5, 0.45])
    jaw_width, face_length = rng.uniform(0.90, 1.06), rng.uniform(0.94, 1.04)
    points[JAW] = centre + (points[JAW] - centre) * [jaw_width, face_length]
    eye_spacing, eye_size = rng.uniform(0.93, 1.07), rng.uniform(0.85, 1.15)
    for eye in (RIGHT_EYE, LEFT_EYE):
        eye_centre = points[eye].mean(axis=0)
        moved_centre = [0.5 + (eye_centre[0] - 0.5) * eye_spacing, eye_centre[1]]
        points[eye] = moved_centre + (points[eye] - eye_centre) * [1.0, eye_size]
    points[17:27, 1] += rng.uniform(-0.02, 0.015)                      # brow height
    points[27:36, 1] = 0.38 + (points[27:36, 1] - 0.38) * rng.uniform(0.92, 1.06)  # nose length
    mouth = np.arange(48, 68)
    mouth_centre = points[mouth].mean(axis=0)
    points[mouth] = mouth_centre + (points[mouth] - mouth_centre) * [rng.uniform(0.88, 1.12), 1.0]
    points[mouth, 1] += rng.uniform(-0.015, 0.015)
    points[:NUM_LANDMARKS] += rng.normal(0.0, 0.0015, (NUM_LANDMARKS, 2))
    return points


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draws one subject's shape and appearance."""
    skin = SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * rng.uniform(0.0, 1.0) + rng.normal(0.0, 0.02, 3)
    num_freckles = int(rng.integers(6, 20))
    freckles = np.column_stack([rng.uniform(0.2, 0.8, num_freckles), rng.uniform(0.35, 0.9, num_freckles),
                                rng.uniform(0.004, 0.010, num_freckles)])
    return Identity(
        control_points=_identity_shape(rng),
        skin=np.clip(skin, 0.05, 1.0),
        lips=np.clip(skin * rng.uniform([0.75, 0.45, 0.45], [0.9, 0.65, 0.65]), 0.0, 1.0),
        iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        background=rng.uniform(0.1, 0.6, 3),
        brow_thickness=float(rng.uniform(0.018, 0.034)),
        brow_darkness=float(rng.uniform(0.35, 0.75)),
        light_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        light_strength=float(rng.uniform(0.10, 0.35)),
        freckles=freckles,
        texture_seed=int(rng.integers(2**31)),
    )


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2 fixed-point (4 fractional bits) int32 vertices."""
    return np.round(np.asarray(points) * 16).astype(np.int32)


def _mask(size: int, draw: Callable[[np.ndarray], object]) -> np.ndarray:
    """A float mask in [0,1] from a drawing callback on a uint8 canvas."""
    canvas = np.zeros((size, size), np.uint8)
    draw(canvas)
    return canvas.astype(np.float32) / 255.0


def _polygon_mask(size: int, polygon: np.ndarray) -> np.ndarray:
    return _mask(size, lambda c: cv2.fillPoly(c, [_fixed(polygon)], 255, cv2.LINE_AA, 4))


def _polyline_mask(size: int, points: np.ndarray, thickness: float) -> np.ndarray:
    return _mask(size, lambda c: cv2.polylines(c, [_fixed(points)], False, 255,
                                               max(1, int(round(thickness))), cv2.LINE_AA, 4))


def _blend(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return image * (1.0 - mask[..., None]) + np.asarray(colour, np.float32) * mask[..., None]


def _forehead_arc(points: np.ndarray, height: float, widen: float = 0.0, num: int = 15) -> np.ndarray:
    """An arc over the forehead from the jaw's image-right end (16) to its image-left end (0),
    ``height`` above them and ``widen`` wider on each side (pixels)."""
    left, right = points[0], points[16]
    centre = (left + right) / 2
    half_width = (right[0] - left[0]) / 2 + widen
    angles = np.linspace(0.0, np.pi, num)[1:-1]
    return np.column_stack([centre[0] + half_width * np.cos(angles), centre[1] - height * np.sin(angles)])


def _skin_texture(identity: Identity, size: int) -> np.ndarray:
    """Multiplicative skin texture: fine pores plus coarse blotches, fixed per subject."""
    rng = np.random.default_rng(identity.texture_seed)
    scale = size / REFERENCE_SIZE
    fine = cv2.GaussianBlur(rng.normal(0.0, 1.0, (size, size)).astype(np.float32), (0, 0), 0.8 * scale)
    coarse = cv2.GaussianBlur(rng.normal(0.0, 1.0, (size, size)).astype(np.float32), (0, 0), 3.0 * scale)
    fine /= fine.std() + 1e-6
    coarse /= coarse.std() + 1e-6
    return 1.0 + 0.07 * fine + 0.05 * coarse


def _lighting(identity: Identity, size: int, face_centre: np.ndarray) -> np.ndarray:
    """A linear lighting gradient times a radial fall-off that rounds the face."""
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    direction = np.cos(identity.light_angle) * (x - 0.5) + np.sin(identity.light_angle) * (y - 0.5)
    radius2 = ((x - face_centre[0]) / 0.42) ** 2 + ((y - face_centre[1]) / 0.55) ** 2
    return (1.0 + 2.0 * identity.light_strength * direction) * (1.0 - 0.25 * np.clip(radius2, 0.0, 1.5))


def _shading(points: np.ndarray, identity: Identity, size: int) -> np.ndarray:
    """Soft darkening of the face: eye sockets, nose sides and nostrils, nasolabial folds, chin."""
    shade = np.zeros((size, size), np.float32)
    for eye in (RIGHT_EYE, LEFT_EYE):
        centre = points[eye].mean(axis=0)
        socket = _mask(size, lambda c, ctr=centre: cv2.ellipse(
            c, tuple(_fixed(ctr)), tuple(_fixed([0.09 * size, 0.05 * size])), 0, 0, 360, 255, -1,
            cv2.LINE_AA, 4))
        shade += 0.25 * socket
    for side in ((27, 28, 29, 31), (27, 28, 29, 35)):
        shade += 0.35 * _polyline_mask(size, points[list(side)], 0.012 * size)
    for nostril in (32, 34):
        shade += 0.6 * _mask(size, lambda c, n=nostril: cv2.ellipse(
            c, tuple(_fixed(points[n] + [0, -0.012 * size])), tuple(_fixed([0.018 * size, 0.009 * size])),
            0, 0, 360, 255, -1, cv2.LINE_AA, 4))
    for wing, corner, cheek in ((31, 48, CHEEK_RIGHT), (35, 54, CHEEK_LEFT)):
        fold = np.stack([points[wing] + (points[cheek] - points[wing]) * 0.3,
                         (points[wing] + points[corner]) / 2 + (points[cheek] - points[corner]) * 0.25,
                         points[corner] + (points[corner] - points[wing]) * 0.15
                         + (points[cheek] - points[corner]) * 0.08])
        shade += 0.3 * _polyline_mask(size, fold, 0.010 * size)
    shade += 0.2 * _polyline_mask(size, np.stack([points[7], (points[57] + points[8]) / 2, points[9]]),
                                  0.01 * size)
    sigma = 1.2 * size / REFERENCE_SIZE
    return 1.0 - np.clip(cv2.GaussianBlur(shade, (0, 0), sigma), 0.0, 0.8)


def _brow_polygon(brow: np.ndarray, thickness: float, midline: float) -> np.ndarray:
    """A band around a brow's centre line (points ordered by x), thickest at its inner end."""
    direction = np.gradient(brow, axis=0)
    normal = np.column_stack([direction[:, 1], -direction[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    distance = np.abs(brow[:, 0] - midline)
    taper = 1.0 - 0.45 * (distance - distance.min()) / (np.ptp(distance) + 1e-9)
    half = thickness / 2 * taper[:, None]
    return np.concatenate([brow + normal * half, (brow - normal * half)[::-1]])


def render_neutral(identity: Identity, size: int) -> np.ndarray:
    """Draws the subject's neutral face as float32 RGB in [0, 255], shape [size, size, 3]."""
    points = identity.control_points * size
    y = (np.arange(size, dtype=np.float32)[:, None, None] + 0.5) / size
    image = np.broadcast_to(identity.background * (0.8 + 0.4 * y), (size, size, 3)).astype(np.float32)

    face_outline = np.concatenate([points[JAW], _forehead_arc(points, 0.33 * size)])
    hair_outline = np.concatenate([points[[16]] + [0.04 * size, 0.05 * size],
                                   _forehead_arc(points, 0.40 * size, widen=0.04 * size),
                                   points[[0]] + [-0.04 * size, 0.05 * size]])
    image = _blend(image, _polygon_mask(size, hair_outline), identity.hair)
    neck = np.stack([points[4] + [0.02 * size, 0], points[12] - [0.02 * size, 0],
                     [points[12, 0] - 0.02 * size, 1.1 * size], [points[4, 0] + 0.02 * size, 1.1 * size]])
    image = _blend(image, _polygon_mask(size, neck), identity.skin * 0.7)
    image = _blend(image, _polygon_mask(size, face_outline), identity.skin)

    for n_x, n_y, radius in identity.freckles:
        image = _blend(image, _mask(size, lambda c, p=(n_x * size, n_y * size), r=radius * size: cv2.circle(
            c, tuple(_fixed(p)), int(round(r * 16)), 255, -1, cv2.LINE_AA, 4)), identity.skin * 0.6)

    image = _blend(image, _polygon_mask(size, points[OUTER_MOUTH]), identity.lips)
    image = _blend(image, _polyline_mask(size, points[INNER_MOUTH[:5]], 0.008 * size),
                   identity.lips * 0.35)
    for eye in (RIGHT_EYE, LEFT_EYE):
        sclera = _polygon_mask(size, points[eye])
        image = _blend(image, sclera, [0.92, 0.90, 0.86])
        centre = points[eye].mean(axis=0)
        iris_radius = 0.45 * (points[eye[4], 1] - points[eye[2], 1] + 0.02 * size)
        iris = _mask(size, lambda c, ctr=centre, r=iris_radius: cv2.circle(
            c, tuple(_fixed(ctr)), int(round(r * 16)), 255, -1, cv2.LINE_AA, 4)) * sclera
        image = _blend(image, iris, identity.iris)
        pupil = _mask(size, lambda c, ctr=centre, r=iris_radius * 0.45: cv2.circle(
            c, tuple(_fixed(ctr)), int(round(r * 16)), 255, -1, cv2.LINE_AA, 4)) * sclera
        image = _blend(image, pupil, [0.03, 0.03, 0.03])
        image = _blend(image, _polyline_mask(size, points[eye[:4]], 0.014 * size), identity.skin * 0.25)
    for brow in (RIGHT_BROW, LEFT_BROW):
        band = _polygon_mask(size, _brow_polygon(points[brow], identity.brow_thickness * size, size / 2))
        image = _blend(image, band, (0.5 * identity.hair + 0.5 * identity.skin) * (1.0 - identity.brow_darkness))

    face_centre = points[[27, 30, 8]].mean(axis=0) / size
    image = image * (_shading(points, identity, size) * _lighting(identity, size, face_centre))[..., None]
    image = image * _skin_texture(identity, size)[..., None]
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.4 * size / REFERENCE_SIZE)
    return np.clip(image * 255.0, 0.0, 255.0).astype(np.float32)


# --------------------------------------------------------------------------- #
# Action units.
# --------------------------------------------------------------------------- #

# Displacement directions of the image-left half (and midline) of the face, in
# units relative to each AU's largest landmark motion; the image-right half is
# mirrored. y points down; for an image-left point, +x points toward the midline.
_AU_HALF_FIELDS: Mapping[int, Mapping[int, tuple[float, float]]] = {
    1: {21: (0.0, -1.0), 20: (0.0, -0.7), 19: (0.0, -0.35), 18: (0.0, -0.15)},            # inner brow raiser
    2: {17: (0.0, -1.0), 18: (0.0, -0.9), 19: (0.0, -0.6), 20: (0.0, -0.25)},             # outer brow raiser
    4: {21: (0.6, 0.7), 20: (0.35, 0.8), 19: (0.15, 0.7), 18: (0.0, 0.5), 17: (0.0, 0.3)},  # brow lowerer
    5: {37: (0.0, -0.55), 38: (0.0, -0.55), 36: (0.0, -0.1), 39: (0.0, -0.1)},            # upper lid raiser
    6: {CHEEK_RIGHT: (0.0, -0.8), 41: (0.0, -0.7), 40: (0.0, -0.6), 36: (0.05, -0.3),     # cheek raiser
        1: (0.0, -0.2), 2: (0.0, -0.2)},
    7: {41: (0.0, -0.6), 40: (0.0, -0.6), 37: (0.0, 0.3), 38: (0.0, 0.3), 36: (0.2, 0.0)},  # lid tightener
    9: {31: (0.15, -0.8), 32: (0.05, -0.9), 33: (0.0, -0.9), 30: (0.0, -0.5), 29: (0.0, -0.3),  # nose wrinkler
        21: (0.2, 0.35), 20: (0.0, 0.2), 49: (0.0, -0.3), 50: (0.0, -0.45), 51: (0.0, -0.4),
        61: (0.0, -0.3), 62: (0.0, -0.3), CHEEK_RIGHT: (0.0, -0.3)},
    12: {48: (-0.7, -0.7), 49: (-0.35, -0.35), 59: (-0.4, -0.3),      # lip corner puller
         61: (-0.2, -0.2), 67: (-0.2, -0.15), 50: (-0.1, -0.15), 58: (-0.1, -0.1),
         CHEEK_RIGHT: (-0.1, -0.4)},
    14: {48: (0.8, 0.0), 49: (0.3, 0.0), 59: (0.3, 0.0), 61: (0.15, 0.0),  # dimpler
         67: (0.15, 0.0)},
    15: {48: (0.0, 1.0), 59: (0.0, 0.45), 49: (0.0, 0.25), 58: (0.0, 0.2),  # lip corner depressor
         67: (0.0, 0.3), 61: (0.0, 0.2)},
    17: {8: (0.0, -1.0), 7: (0.0, -0.8), 6: (0.0, -0.4), 57: (0.0, -0.7), 58: (0.0, -0.6),  # chin raiser
         59: (0.0, -0.35), 66: (0.0, -0.5), 67: (0.0, -0.4), 62: (0.0, -0.3), 61: (0.0, -0.25)},
    24: {48: (0.5, 0.0), 50: (0.0, 0.4), 51: (0.0, 0.4), 49: (0.0, 0.2), 58: (0.0, -0.4),  # lip pressor
         57: (0.0, -0.4), 59: (0.0, -0.2)},
}
# The inner mouth corners (60, 64) sit close to the outer ones (48, 54) and move with them.
_TIED_POINTS = {60: 48, 64: 54}
ACTION_UNITS = tuple(sorted(_AU_HALF_FIELDS))


@functools.cache
def au_field(au: int) -> np.ndarray:
    """The symmetric displacement field [73,2] of one AU; its largest landmark motion has norm 1."""
    if au not in _AU_HALF_FIELDS:
        raise KeyError(f"no displacement field for AU{au}; known: {list(ACTION_UNITS)}")
    field = np.zeros((NUM_CONTROL, 2))
    for index, (dx, dy) in _AU_HALF_FIELDS[au].items():
        field[index] = (dx, dy)
        if MIRROR[index] != index:
            field[MIRROR[index]] = (-dx, dy)
    for follower, leader in _TIED_POINTS.items():
        field[follower] = field[leader]
    return field / np.linalg.norm(field[:NUM_LANDMARKS], axis=1).max()


def _image_left(points: np.ndarray) -> np.ndarray:
    return points[:, 0] < 0.5


def expression_field(intensities: Mapping[int, float], asymmetry: float) -> np.ndarray:
    """Sums AU fields weighted by intensity, weakens the image-right half by ``asymmetry`` (0: symmetric),
    and rescales so that the largest landmark displacement is 1 (or returns zeros for no AU)."""
    field = np.zeros((NUM_CONTROL, 2))
    for au, intensity in intensities.items():
        field += intensity * au_field(au)
    field[~_image_left(template())] *= 1.0 - asymmetry
    largest = np.linalg.norm(field[:NUM_LANDMARKS], axis=1).max()
    return field / largest if largest > 0 else field


def blink_field(control_points: np.ndarray, closure: np.ndarray | float) -> np.ndarray:
    """Moves each upper-lid point ``closure`` of the way down to the lower-lid point facing it.

    ``control_points`` may carry leading axes (e.g. time) that ``closure`` broadcasts against.
    """
    closure = np.asarray(closure, np.float64)[..., None, None]
    field = np.zeros_like(control_points)
    field[..., UPPER_LIDS, :] = closure * (control_points[..., LOWER_LIDS_FACING, :]
                                           - control_points[..., UPPER_LIDS, :])
    return field


# --------------------------------------------------------------------------- #
# Time courses.
# --------------------------------------------------------------------------- #

def apex_envelope(num_frames: int, apex: int) -> np.ndarray:
    """Raised-cosine rise from 0 at frame 0 to 1 at ``apex`` and fall back to 0 at the last frame."""
    t = np.arange(num_frames, dtype=np.float64)
    rise = 0.5 * (1.0 - np.cos(np.pi * t / max(apex, 1)))
    fall = 0.5 * (1.0 + np.cos(np.pi * (t - apex) / max(num_frames - 1 - apex, 1)))
    return np.where(t <= apex, rise, fall)


def blink_curve(num_frames: int, start: int, close_frames: float, open_frames: float) -> np.ndarray:
    """Lid closure over time: a quick raised-cosine close from ``start`` then a slower opening."""
    t = np.arange(num_frames, dtype=np.float64) - start
    closing = 0.5 * (1.0 - np.cos(np.pi * np.clip(t / close_frames, 0.0, 1.0)))
    opening = 0.5 * (1.0 + np.cos(np.pi * np.clip((t - close_frames) / open_frames, 0.0, 1.0)))
    return np.where(t < close_frames, closing, opening) * (t >= 0)


def smooth_random_walk(rng: np.random.Generator, num_frames: int, step_std: float,
                       smoothing_frames: float) -> np.ndarray:
    """A Gaussian random walk, low-pass filtered and shifted to start at exactly 0."""
    walk = np.cumsum(rng.normal(0.0, step_std, num_frames))
    if smoothing_frames > 0 and num_frames > 1:
        radius = int(np.ceil(3 * smoothing_frames))
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / smoothing_frames) ** 2)
        padded = np.pad(walk, radius, mode="edge")
        walk = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return walk - walk[0]


def similarity(scale: float, angle_degrees: float, translation: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of a rotation+scale about ``centre`` followed by a translation."""
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle_degrees), float(scale))
    matrix[:, 2] += translation
    return matrix


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a 2x3 affine matrix to points [...,2]."""
    return points @ matrix[:, :2].T + matrix[:, 2]


# --------------------------------------------------------------------------- #
# One clip.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class ClipMotion:
    """Everything that changes over one clip, in pixels of the crop being rendered."""

    expression: np.ndarray    # [T,73,2] AU displacement (zero on frame 0)
    lid_closure: np.ndarray   # [T] fraction of the (expressed) lid gap closed by a blink
    pose: np.ndarray          # [T,2,3] crop jitter composed with head drift (jitter only on frame 0)
    gain: np.ndarray          # [T] brightness flicker
    noise_std: float          # grey levels


@dataclasses.dataclass(frozen=True)
class MotionParams:
    """Knobs of the clip generator; lengths in pixels of a 128x128 crop, times in seconds."""

    amplitude_px: tuple[float, float] = (0.5, 3.0)   # largest landmark displacement at apex, log-uniform
    max_asymmetry: float = 0.4                       # image-right half weakened by up to this fraction
    jitter_px: float = 1.0                           # per-clip crop offset (std), frame 0 included
    jitter_degrees: float = 1.0
    jitter_scale: float = 0.015
    drift_px_per_sqrt_s: float = 4.0                 # head-drift random walk, translation
    drift_degrees_per_sqrt_s: float = 1.5            # rotation
    drift_scale_per_sqrt_s: float = 0.006            # scale (towards / away from the camera)
    drift_smoothing_s: float = 0.03
    blink_probability: float = 0.4
    blink_closure: tuple[float, float] = (0.55, 0.85)  # fraction of the lid gap closed at the blink's peak
    blink_close_s: tuple[float, float] = (0.04, 0.08)
    blink_open_s: tuple[float, float] = (0.08, 0.16)
    flicker: float = 0.03                            # largest relative brightness swing
    noise_std: tuple[float, float] = (1.5, 3.0)      # grey levels


def _pose_path(rng: np.random.Generator, num_frames: int, fps: float, size: int, centre: np.ndarray,
               params: MotionParams) -> np.ndarray:
    """Per-frame similarity [T,2,3]: the clip's crop jitter plus a smooth head drift that is 0 on frame 0."""
    scale_px = size / REFERENCE_SIZE
    step = np.sqrt(1.0 / fps) * rng.lognormal(0.0, 0.5)  # some clips are still, some restless
    smoothing = params.drift_smoothing_s * fps
    translation = np.stack([
        rng.normal(0.0, params.jitter_px) * scale_px
        + smooth_random_walk(rng, num_frames, params.drift_px_per_sqrt_s * scale_px * step, smoothing)
        for _ in range(2)], axis=-1)
    angle = rng.normal(0.0, params.jitter_degrees) + smooth_random_walk(
        rng, num_frames, params.drift_degrees_per_sqrt_s * step, smoothing)
    scale = 1.0 + rng.normal(0.0, params.jitter_scale) + smooth_random_walk(
        rng, num_frames, params.drift_scale_per_sqrt_s * step, smoothing)
    return np.stack([similarity(scale[t], angle[t], translation[t], centre) for t in range(num_frames)])


def _lid_closure_path(rng: np.random.Generator, num_frames: int, fps: float, params: MotionParams) -> np.ndarray:
    """Lid closure [T] of at most one blink, which never starts on frame 0."""
    if num_frames < 2 or rng.uniform() >= params.blink_probability:
        return np.zeros(num_frames)
    close_frames = max(1.0, rng.uniform(*params.blink_close_s) * fps)
    open_frames = max(1.0, rng.uniform(*params.blink_open_s) * fps)
    start = int(rng.integers(1, num_frames))
    return rng.uniform(*params.blink_closure) * blink_curve(num_frames, start, close_frames, open_frames)


def _gain_path(rng: np.random.Generator, num_frames: int, fps: float, params: MotionParams) -> np.ndarray:
    """Brightness gain per frame: a slow beat (aliased mains flicker) plus a little jitter."""
    t = np.arange(num_frames) / fps
    beat = rng.uniform(0.0, params.flicker) * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t
                                                     + rng.uniform(0, 2 * np.pi))
    return 1.0 + beat + rng.normal(0.0, 0.003, num_frames)


def sample_motion(rng: np.random.Generator, intensities: Mapping[int, float], num_frames: int, apex: int,
                  fps: float, neutral: np.ndarray, size: int, params: MotionParams) -> ClipMotion:
    """Draws one clip's expression (AU ``intensities``, none for a non-expression clip) and nuisances.

    ``neutral`` are the subject's control points [73,2] in pixels of a ``size`` crop.
    """
    amplitude = np.exp(rng.uniform(*np.log(params.amplitude_px))) * size / REFERENCE_SIZE  # log-uniform
    field = expression_field(intensities, rng.uniform(0.0, params.max_asymmetry))
    expression = apex_envelope(num_frames, apex)[:, None, None] * amplitude * field
    centre = neutral[[27, 30, 8]].mean(axis=0)
    return ClipMotion(
        expression=expression,
        lid_closure=_lid_closure_path(rng, num_frames, fps, params),
        pose=_pose_path(rng, num_frames, fps, size, centre, params),
        gain=_gain_path(rng, num_frames, fps, params),
        noise_std=float(rng.uniform(*params.noise_std)),
    )


@dataclasses.dataclass(frozen=True)
class RenderedClip:
    """A rendered clip with its ground truth."""

    frames: np.ndarray        # [T,S,S,3] uint8
    landmarks: np.ndarray     # [T,68,2] float32, crop pixels
    expression: np.ndarray    # [T,68,2] float32: AU displacement before the pose, the ground truth of the signal


def frame_control_points(neutral: np.ndarray, motion: ClipMotion) -> np.ndarray:
    """Control points [T,73,2] of every frame: pose applied to neutral + expression, then blinked."""
    expressed = neutral[None] + motion.expression
    local = expressed + blink_field(expressed, motion.lid_closure)
    return np.einsum("tpk,tjk->tpj", local, motion.pose[:, :, :2]) + motion.pose[:, None, :, 2]


def render_clip(neutral_image: np.ndarray, neutral: np.ndarray, motion: ClipMotion,
                rng: np.random.Generator) -> RenderedClip:
    """Warps the neutral image [S,S,3] (float, 0..255) with control points ``neutral`` [73,2]
    (pixels) into every frame of ``motion``; adds flicker and sensor noise drawn from ``rng``."""
    size = neutral_image.shape[0]
    triangles = triangulation()
    source = with_border(neutral, size)
    points = frame_control_points(neutral, motion)
    frames = np.empty((len(points), size, size, 3), np.uint8)
    for t, frame_points in enumerate(points):
        target_border = apply_affine(motion.pose[t], _border_points() * size)
        target = np.concatenate([frame_points, target_border])
        if np.any(signed_areas(target, triangles) <= 0):
            raise ValueError(f"frame {t}: the motion folds the face mesh over; amplitudes are too large")
        warped = warp(neutral_image, source, target, triangles)
        noisy = warped * motion.gain[t] + rng.normal(0.0, motion.noise_std, warped.shape)
        frames[t] = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return RenderedClip(
        frames=frames,
        landmarks=points[:, :NUM_LANDMARKS].astype(np.float32),
        expression=motion.expression[:, :NUM_LANDMARKS].astype(np.float32),
    )
