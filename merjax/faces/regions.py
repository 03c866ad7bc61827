"""Face regions placed by 68 landmarks: box templates for region crops, landmark hulls for Grad-CAM.

Three of the methods look at parts of the face rather than the whole of it:
seed 002 crops six boxes and trains one network per region, seed 003 crops
three from a dynamic image with the eyes masked, and seed 001 judges Grad-CAM
heatmaps by how much of them falls on the brows, eyes, nose and mouth. All of
them are placed here, from landmarks in the iBUG order (``merjax.faces.ibug68``).

Conventions:

* Coordinates are (x, y) pixels with pixel centres at integers, as in
  ``merjax.faces.landmarks`` and every ``ClipSet``.
* Names are in the subject's sense, like the iBUG markup: ``right_brow_eye`` is
  the subject's right brow and eye, on the image's left. Seed 002 names its
  regions in the image's sense ("left eye + eyebrow" first, the box at x 0-100
  of its follow-up code), so its region 0 is ``right_brow_eye`` here. A
  template's ``regions`` keep the seed's order: the columns of per-region targets.
* A box is ``(x0, y0, x1, y1)`` in whole pixels, right and bottom exclusive:
  the region is ``frames[:, y0:y1, x0:x1]``. A template places continuous
  edges (left, top, right, bottom); a pixel is in the box when part of it is
  inside the edges (pixel x spans x - 0.5 .. x + 0.5): x0 = floor(left - 0.5) + 1,
  x1 = ceil(right + 0.5), edges first rounded to 1e-6 px so that float error
  decides no pixel. A landmark on an edge is thus inside. The box is then
  clipped to the frame; a box left empty is a ``UserError`` naming the
  template and the region.
* Boxes come from the first frame's landmarks and stay fixed for the clip:
  seed 002 §3.1 notes that boxes which followed the landmarks would follow the
  motion too, and "we get very similar images for each region".
* A horizontal flip (``merjax.data.augment.hflip``) mirrors the pixels and
  renumbers the landmarks, so the flipped face is again a frontal face in the
  iBUG order. Every template is mirror-symmetric: on the flipped clip a
  region's crop is the mirror image of its partner's crop on the original
  (``RegionTemplate.mirror_pairs``, ``MIRROR_PAIRS``; a region without a pair is
  its own partner). The pixel rule above is its own mirror image, so the
  boxes mirror exactly; the crops agree up to one grey level, cv2's
  fixed-point rounding of the mirrored resize weights.

Templates (``REGION_TEMPLATES``):

``seed002``
  Seed 002 §4.1.2: "left eye + eyebrow, right eye + eyebrow, nose, left cheek,
  right cheek and mouth, respectively, at size {[100,80], [100,80], [120,80],
  [60,60], [60,60], [160,60]}" (width x height) "using 68 facial landmarks".
  The seed gives no positions; they are the authors' follow-up code's
  (Aouayeb et al. 2022, github.com/MouathAb/AnalyseMiE-CNN_LSTM_SE,
  ``crop_6_ROIs.py``, after Zhao & Xu's necessary morphological patches): a face
  box from landmark 17 to landmark 26 in x and from min(y of 18, y of 25) to
  the chin, landmark 8, in y, fitted into a 240 x 280 canvas (aspect kept,
  centred), and six canvas boxes ``SEED002_CANVAS_BOXES`` whose sizes are the
  seed's. Here each canvas box is mapped back to the frame and cut from it, so
  a region is resized by the canvas scale alone and keeps its proportions (up
  to rounding and clipping). Two departures, both so that a region covers the
  same part of every face at one scale: that code's ``resize_contain`` only
  shrinks, so a face smaller than the canvas was pasted unscaled and its boxes
  fell on other parts of it (seed 002: "each database has a different size of
  images for each cropped region"), where here the face box is always scaled
  to fit; and canvas outside the face box, black padding there, is the frame's
  own pixels here. As in that code, the brow boxes start 20 canvas pixels
  below the face box's top, so they cut through the brows
  (``docs/figures/face_regions.png``).

``seed003``
  Seed 003 §III.C: three rectangles from dlib's 68 landmarks, "eyebrow (blue
  rectangle), nose (green rectangle) and mouth (red rectangle)", covering the
  "forehead, eyebrows, nose, mouth and mouth corner areas", and "eyes are
  masked ... since eye cascades and blinking are not ME". The seed gives no
  numbers; with d the distance between the eye centres (``face_size``):

  * ``brows_forehead``: x from landmark 17 to 26 (the brows' outer ends); y from
    ``SEED003_FOREHEAD`` d above the brows' highest point down to the eyes'
    lowest landmark, so brow raising and lowering (AU1, 2, 4) and the glabella
    stay inside;
  * ``nose``: x from landmark 31 to 35 (the wings) widened by
    ``SEED003_NOSE_SIDE`` d on each side, for the wrinkles of AU9; y from the
    bridge's top (27) to below the tip (33);
  * ``mouth``: x from corner 48 to corner 54 widened by ``SEED003_MOUTH_SIDE`` d
    on each side, for the corners' travel (AU12, 14, 15, 20); y from below the
    nose (33, so AU10's upper lip is in) to ``SEED003_CHIN`` d below the lower
    lip (57, for AU15, 17).

  The eyes are masked: ``region_mask`` is False on the convex hull of each eye's
  six landmarks dilated by ``SEED003_EYE_MARGIN`` d (the lids and lashes), and
  ``crop_regions`` blanks those pixels to 0 before cropping. The crop sizes
  (the seed gives none; its CNNs take whole images) keep the boxes'
  proportions on a frontal face, about 2:1, 1.1:1 and 2:1 on the synthetic_me
  template face and on scikit-image's astronaut.

Seed 001's Grad-CAM regions are landmark hulls, not boxes: ``FEATURE_GROUPS``
and ``hull_mask`` (see there); ``merjax.interpret.region_scores`` scores
heatmaps against such masks.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from merjax.errors import UserError
from merjax.faces import ibug68
from merjax.faces.crop import resize_frames

PixelBox = tuple[int, int, int, int]           # (x0, y0, x1, y1), right and bottom exclusive
Edges = tuple[float, float, float, float]      # continuous (left, top, right, bottom) in pixel coordinates


# --------------------------------------------------------------------------- #
# Landmark hulls: seed 001's Grad-CAM regions, seed 003's eye mask.
# --------------------------------------------------------------------------- #

FEATURE_GROUPS: Mapping[str, tuple[int, ...]] = types.MappingProxyType({
    "right_brow_eye": ibug68.RIGHT_BROW + ibug68.RIGHT_EYE,    # AU1/2/4 brows, AU6/7 lids
    "left_brow_eye": ibug68.LEFT_BROW + ibug68.LEFT_EYE,
    "nose": ibug68.NOSE_BRIDGE + ibug68.NOSTRILS,              # AU9 nose wrinkler, wings
    "mouth": ibug68.OUTER_LIP,                                 # AU12/14/15/20/25 lips and corners
})
DEFAULT_MARGIN = 0.15   # of the inter-ocular distance


def _checked_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """``landmarks`` as float64 [68,2]; raises UserError naming the shape or the non-finite values."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (ibug68.NUM_LANDMARKS, 2):
        raise UserError(f"landmarks must be [{ibug68.NUM_LANDMARKS},2] (x, y) pixels, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise UserError("landmarks have non-finite values (no face was landmarked on that frame)")
    return points


def _checked_frame_shape(frame_shape: Sequence[int]) -> tuple[int, int]:
    """``frame_shape`` as (height, width) ints >= 1; raises ValueError naming it otherwise."""
    shape = tuple(frame_shape)
    if len(shape) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in shape):
        raise ValueError(f"frame_shape must be (height, width) with positive ints, got {frame_shape!r}")
    return int(shape[0]), int(shape[1])


def face_size(landmarks: np.ndarray) -> float:
    """The distance between the centres of the two eyes (36-41, 42-47), in pixels, of landmarks [68,2]."""
    points = _checked_landmarks(landmarks)
    return float(np.linalg.norm(points[list(ibug68.RIGHT_EYE)].mean(0) - points[list(ibug68.LEFT_EYE)].mean(0)))


def _face_scale(points: np.ndarray) -> float:
    """``face_size``, refusing a face whose eyes coincide (landmarks missing or degenerate)."""
    scale = face_size(points)
    if scale <= 0:
        raise UserError("landmarks are degenerate: the two eye centres coincide")
    return scale


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


def hull_mask(landmarks: np.ndarray, frame_shape: Sequence[int], *,
              groups: Mapping[str, Sequence[int]] = FEATURE_GROUPS, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Boolean mask [H,W] of the union of the groups' convex hulls dilated by ``margin`` x ``face_size``.

    With the default ``FEATURE_GROUPS`` these are seed 001's "micro-expression
    aware" regions, where its Figure 4 sees the Grad-CAM heatmaps gather after
    training ("the eyes, eyebrows, nose wings, corners of the mouth"): convex
    hulls of landmark groups, the jaw line (0-16) and the inner lip (inside the
    outer lip's hull) left out. The margin follows the face's size, so that skin
    that moves with a feature (the wings beside the nostrils, the furrow beside a
    mouth corner) counts as inside. A pixel is in the mask when its centre is
    inside a hull or within the margin of it.

    Args:
      landmarks: [68,2] (x, y) in pixels of the image the mask is for.
      frame_shape: the image's (height, width).
    """
    points = _checked_landmarks(landmarks)
    height, width = _checked_frame_shape(frame_shape)
    reach = margin * _face_scale(points)
    mask = np.zeros((height, width), bool)
    for indices in groups.values():
        group = points[list(indices)]
        hull = cv2.convexHull(group.astype(np.float32))[:, 0, :].astype(np.float64)
        # Only pixels within the hull's box grown by the reach can be in the mask.
        x0, y0 = np.maximum(np.floor(group.min(0) - reach), 0).astype(int)
        x1, y1 = np.minimum(np.ceil(group.max(0) + reach) + 1, (width, height)).astype(int)
        if x1 <= x0 or y1 <= y0:
            continue
        y, x = np.mgrid[y0:y1, x0:x1]
        pixels = np.stack([x.ravel(), y.ravel()], axis=-1).astype(np.float64)
        near = _distance_to_polygon(pixels, hull) <= reach
        mask[y0:y1, x0:x1] |= near.reshape(y1 - y0, x1 - x0)
    return mask


def hull_masks(landmarks: np.ndarray, frame_shape: Sequence[int], *,
               groups: Mapping[str, Sequence[int]] = FEATURE_GROUPS, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """``hull_mask`` of each of landmarks [N,68,2]: [N,H,W] bool."""
    return np.stack([hull_mask(points, frame_shape, groups=groups, margin=margin) for points in landmarks])


# --------------------------------------------------------------------------- #
# Box templates.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class RegionTemplate:
    """A set of face regions placed by one frame's 68 landmarks.

    Attributes:
      name: the key in ``REGION_TEMPLATES``.
      regions: the region names, in the seed's order.
      sizes: each region's crop size (width, height).
      mirror_pairs: the (right, left) pairs that a horizontal flip swaps.
      place: landmarks [68,2] (float64, checked) -> {region: continuous ``Edges``}.
      masked_groups: landmark groups blanked inside the regions (dilated hulls, see ``hull_mask``).
      mask_margin: their dilation, a fraction of ``face_size``.
    """

    name: str
    regions: tuple[str, ...]
    sizes: Mapping[str, tuple[int, int]]
    mirror_pairs: tuple[tuple[str, str], ...]
    place: Callable[[np.ndarray], Mapping[str, Edges]]
    masked_groups: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    mask_margin: float = 0.0

    def mirror_partner(self, region: str) -> str:
        """The region whose crop a horizontal flip turns ``region``'s into (itself when unpaired)."""
        if region not in self.regions:
            raise KeyError(f"template {self.name!r} has no region {region!r}; it has {list(self.regions)}")
        partners = {a: b for pair in self.mirror_pairs for a, b in (pair, pair[::-1])}
        return partners.get(region, region)


SEED002_CANVAS = (240, 280)   # (width, height) the face box is fitted into
SEED002_CANVAS_BOXES: Mapping[str, tuple[int, int, int, int]] = types.MappingProxyType({
    # (u0, v0, u1, v1) in canvas pixels; the code's (x0, x1, y0, y1) lists, in the seed's region order.
    "right_brow_eye": (0, 20, 100, 100),
    "left_brow_eye": (140, 20, 240, 100),
    "nose": (60, 80, 180, 160),
    "right_cheek": (0, 120, 60, 180),
    "left_cheek": (180, 120, 240, 180),
    "mouth": (40, 180, 200, 240),
})


def _place_seed002(points: np.ndarray) -> dict[str, Edges]:
    """Seed 002's six boxes: the canvas boxes mapped back through the face box (module docstring)."""
    left, right = points[17, 0], points[26, 0]
    top, bottom = min(points[18, 1], points[25, 1]), points[8, 1]
    if right <= left or bottom <= top:
        raise UserError(f"the seed002 face box is empty: landmark 17 (x={left:g}) must lie left of 26 "
                        f"(x={right:g}) and the brows (y={top:g}) above the chin, 8 (y={bottom:g})")
    canvas_width, canvas_height = SEED002_CANVAS
    scale = min(canvas_width / (right - left), canvas_height / (bottom - top))
    origin_x = left - (canvas_width - scale * (right - left)) / 2 / scale    # frame x of canvas u = 0
    origin_y = top - (canvas_height - scale * (bottom - top)) / 2 / scale
    return {name: (origin_x + u0 / scale, origin_y + v0 / scale, origin_x + u1 / scale, origin_y + v1 / scale)
            for name, (u0, v0, u1, v1) in SEED002_CANVAS_BOXES.items()}


SEED003_FOREHEAD = 0.5      # forehead above the brows, x face_size
SEED003_NOSE_SIDE = 0.2     # beyond each nose wing
SEED003_MOUTH_SIDE = 0.3    # beyond each mouth corner
SEED003_CHIN = 0.3          # below the lower lip
SEED003_EYE_MARGIN = 0.12   # eye hull dilation: lids and lashes


def _place_seed003(points: np.ndarray) -> dict[str, Edges]:
    """Seed 003's three boxes (module docstring)."""
    d = _face_scale(points)
    brows, eyes = points[list(ibug68.RIGHT_BROW + ibug68.LEFT_BROW)], points[list(ibug68.RIGHT_EYE + ibug68.LEFT_EYE)]
    return {
        "brows_forehead": (points[17, 0], brows[:, 1].min() - SEED003_FOREHEAD * d, points[26, 0], eyes[:, 1].max()),
        "nose": (points[31, 0] - SEED003_NOSE_SIDE * d, points[27, 1], points[35, 0] + SEED003_NOSE_SIDE * d,
                 points[33, 1]),
        "mouth": (points[48, 0] - SEED003_MOUTH_SIDE * d, points[33, 1], points[54, 0] + SEED003_MOUTH_SIDE * d,
                  points[57, 1] + SEED003_CHIN * d),
    }


REGION_TEMPLATES: Mapping[str, RegionTemplate] = types.MappingProxyType({
    "seed002": RegionTemplate(
        name="seed002",
        regions=tuple(SEED002_CANVAS_BOXES),
        sizes=types.MappingProxyType({name: (u1 - u0, v1 - v0)
                                      for name, (u0, v0, u1, v1) in SEED002_CANVAS_BOXES.items()}),
        mirror_pairs=(("right_brow_eye", "left_brow_eye"), ("right_cheek", "left_cheek")),
        place=_place_seed002,
    ),
    "seed003": RegionTemplate(
        name="seed003",
        regions=("brows_forehead", "nose", "mouth"),
        sizes=types.MappingProxyType({"brows_forehead": (160, 80), "nose": (112, 96), "mouth": (160, 80)}),
        mirror_pairs=(),
        place=_place_seed003,
        masked_groups=types.MappingProxyType({"right_eye": ibug68.RIGHT_EYE, "left_eye": ibug68.LEFT_EYE}),
        mask_margin=SEED003_EYE_MARGIN,
    ),
})
MIRROR_PAIRS: Mapping[str, tuple[tuple[str, str], ...]] = types.MappingProxyType(
    {name: template.mirror_pairs for name, template in REGION_TEMPLATES.items()})


def get_template(template: str | RegionTemplate) -> RegionTemplate:
    """``template`` itself, or the registered template of that name (a UserError naming the known ones)."""
    if isinstance(template, RegionTemplate):
        return template
    if template not in REGION_TEMPLATES:
        raise UserError(f"unknown face region template {template!r}; known: {sorted(REGION_TEMPLATES)}")
    return REGION_TEMPLATES[template]


EDGE_DECIMALS = 6   # edges are rounded to 1e-6 px before they are turned into whole pixels


def _pixel_box(template: RegionTemplate, region: str, edges: Edges, height: int, width: int) -> PixelBox:
    """The pixels that reach inside the continuous edges, clipped to the frame; never empty."""
    left, top, right, bottom = (round(float(v), EDGE_DECIMALS) for v in edges)
    x0, x1 = (min(max(v, 0), width) for v in (math.floor(left - 0.5) + 1, math.ceil(right + 0.5)))
    y0, y1 = (min(max(v, 0), height) for v in (math.floor(top - 0.5) + 1, math.ceil(bottom + 0.5)))
    if x1 <= x0 or y1 <= y0:
        raise UserError(
            f"face region {region!r} of template {template.name!r} is empty in the {width}x{height} frame: "
            f"its edges (left, top, right, bottom) = ({left:.1f}, {top:.1f}, {right:.1f}, {bottom:.1f}) lie "
            f"outside it; check the landmarks of the clip's first frame")
    return x0, y0, x1, y1


def region_boxes(template: str | RegionTemplate, landmarks: np.ndarray,
                 frame_shape: Sequence[int]) -> dict[str, PixelBox]:
    """Each region's box ``(x0, y0, x1, y1)`` in a frame of ``frame_shape`` (H, W), from landmarks [68,2].

    Pass the clip's first-frame landmarks; the boxes are then used for every
    frame. Boxes are clipped to the frame and never empty (UserError otherwise).
    """
    template = get_template(template)
    points = _checked_landmarks(landmarks)
    height, width = _checked_frame_shape(frame_shape)
    edges = template.place(points)
    return {region: _pixel_box(template, region, edges[region], height, width) for region in template.regions}


def region_mask(template: str | RegionTemplate, landmarks: np.ndarray, frame_shape: Sequence[int]) -> np.ndarray:
    """Bool [H,W]: True on the pixels the template keeps, inside its boxes and outside its masked groups.

    For ``seed003`` the eyes (dilated hulls) are False; multiplying a frame or a
    dynamic image by this mask gives the face with only the template's regions
    left, the eyes blanked.
    """
    template = get_template(template)
    height, width = _checked_frame_shape(frame_shape)
    keep = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in region_boxes(template, landmarks, (height, width)).values():
        keep[y0:y1, x0:x1] = True
    if template.masked_groups:
        keep &= ~hull_mask(landmarks, (height, width), groups=template.masked_groups, margin=template.mask_margin)
    return keep


def crop_region(frames: np.ndarray, box: PixelBox, size: tuple[int, int], *,
                keep: np.ndarray | None = None) -> np.ndarray:
    """Cuts ``box`` from every frame of [T,H,W,C] and resizes it to [T,height,width,C] for ``size`` (width, height).

    The box must lie inside the frames (``region_boxes`` clips it). Pixels where
    the bool [H,W] ``keep`` is False are set to 0 first. Resizing is
    ``merjax.faces.crop.resize_frames`` (area when shrinking both ways,
    bilinear otherwise); the dtype is kept.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"frames must be [T,H,W,C], got shape {frames.shape}")
    height, width = frames.shape[1:3]
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {tuple(box)} is empty or reaches outside the {width}x{height} frames")
    region = frames[:, y0:y1, x0:x1]
    if keep is not None:
        keep = np.asarray(keep, bool)
        if keep.shape != (height, width):
            raise ValueError(f"keep must be a bool mask of the frames' size {(height, width)}, got {keep.shape}")
        region = np.where(keep[None, y0:y1, x0:x1, None], region, np.zeros((), frames.dtype))
    return resize_frames(region, size)


def crop_regions(template: str | RegionTemplate, frames: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Every region of ``template`` cropped from frames [T,H,W,C] at its size: {region: [T,h,w,C]}.

    ``landmarks`` are the clip's [T',68,2]; only the first frame's place the
    boxes, which stay fixed for the clip (``frames`` may be a clip or, e.g., its
    dynamic image [1,H,W,C]). A template's masked groups are blanked to 0.
    """
    template = get_template(template)
    frames, landmarks = np.asarray(frames), np.asarray(landmarks)
    if frames.ndim != 4:
        raise ValueError(f"frames must be [T,H,W,C], got shape {frames.shape}")
    if landmarks.ndim != 3 or len(landmarks) == 0:
        raise ValueError(f"landmarks must be the clip's [T,68,2], got shape {landmarks.shape}")
    frame_shape = frames.shape[1:3]
    boxes = region_boxes(template, landmarks[0], frame_shape)
    keep = region_mask(template, landmarks[0], frame_shape) if template.masked_groups else None
    return {region: crop_region(frames, boxes[region], template.sizes[region], keep=keep)
            for region in template.regions}
