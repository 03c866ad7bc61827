"""Face region templates (seed 002's six boxes, seed 003's three with the eyes masked) and landmark hulls."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from datasets.synthetic_me import render
from merjax.data import augment
from merjax.errors import UserError
from merjax.faces import ibug68, regions

FRAME_SHAPE = (120, 104)           # (H, W): not square, so that x/y mix-ups show
TEMPLATES = ("seed002", "seed003")


def face_landmarks(jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """synthetic_me's neutral template face placed off-centre in the frame, optionally made asymmetric."""
    points = render.template()[:68] * (70.0, 80.0) + (21.3, 2.7)
    return points + np.random.default_rng(seed).normal(0.0, jitter, points.shape)


def random_clip(num_frames: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, *FRAME_SHAPE, 3), dtype=np.uint8)


def centre(box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


def contains(box: tuple[int, int, int, int], points: np.ndarray) -> bool:
    x0, y0, x1, y1 = box
    x, y = np.floor(points + 0.5).T
    return bool(np.all((x0 <= x) & (x < x1) & (y0 <= y) & (y < y1)))


@pytest.mark.parametrize("name", TEMPLATES)
def test_boxes_are_whole_pixels_inside_the_frame(name):
    height, width = FRAME_SHAPE
    boxes = regions.region_boxes(name, face_landmarks(), FRAME_SHAPE)
    assert tuple(boxes) == regions.REGION_TEMPLATES[name].regions
    for x0, y0, x1, y1 in boxes.values():
        assert all(isinstance(v, int) for v in (x0, y0, x1, y1))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_seed002_placement_and_sizes():
    landmarks = face_landmarks()
    boxes = regions.region_boxes("seed002", landmarks, FRAME_SHAPE)
    at = {name: centre(box) for name, box in boxes.items()}
    # Seed 002 §4.1.2, in its order: left eye + eyebrow, right eye + eyebrow, nose, left cheek, right cheek,
    # mouth (the image's left first: the subject's right), at {[100,80],[100,80],[120,80],[60,60],[60,60],[160,60]}.
    template = regions.REGION_TEMPLATES["seed002"]
    assert template.regions == ("right_brow_eye", "left_brow_eye", "nose", "right_cheek", "left_cheek", "mouth")
    assert [template.sizes[name] for name in template.regions] == [
        (100, 80), (100, 80), (120, 80), (60, 60), (60, 60), (160, 60)]
    assert at["right_brow_eye"][1] < at["nose"][1] < at["mouth"][1]
    assert at["right_brow_eye"][1] == at["left_brow_eye"][1] and at["right_cheek"][1] == at["left_cheek"][1]
    assert at["right_brow_eye"][0] < at["nose"][0] < at["left_brow_eye"][0]
    assert at["right_cheek"][0] < at["mouth"][0] < at["left_cheek"][0]
    assert contains(boxes["right_brow_eye"], landmarks[list(ibug68.RIGHT_EYE)])
    assert contains(boxes["left_brow_eye"], landmarks[list(ibug68.LEFT_EYE)])
    # One scale for every box, the face box's fit into the 240 x 280 canvas: a box spans its output size
    # / that scale, plus less than one pixel on each side (the pixels it reaches into).
    face_width = landmarks[26, 0] - landmarks[17, 0]
    face_height = landmarks[8, 1] - min(landmarks[18, 1], landmarks[25, 1])
    scale = min(240 / face_width, 280 / face_height)
    for name, (x0, y0, x1, y1) in boxes.items():
        width, height = template.sizes[name]
        assert 0 <= (x1 - x0) - width / scale < 2 and 0 <= (y1 - y0) - height / scale < 2, name
    crops = regions.crop_regions("seed002", random_clip(), landmarks[None])
    assert {name: crop.shape for name, crop in crops.items()} == {
        name: (3, height, width, 3) for name, (width, height) in template.sizes.items()}


def test_seed003_placement():
    landmarks = face_landmarks()
    boxes = regions.region_boxes("seed003", landmarks, FRAME_SHAPE)
    assert tuple(boxes) == ("brows_forehead", "nose", "mouth")
    at = {name: centre(box) for name, box in boxes.items()}
    assert at["brows_forehead"][1] < at["nose"][1] < at["mouth"][1]
    assert contains(boxes["brows_forehead"], landmarks[list(ibug68.RIGHT_BROW + ibug68.LEFT_BROW)])
    assert boxes["brows_forehead"][1] < landmarks[17:27, 1].min() - 0.3 * regions.face_size(landmarks)  # forehead
    assert contains(boxes["nose"], landmarks[list(ibug68.NOSE_BRIDGE + ibug68.NOSTRILS)][:-3])      # 27-32
    assert contains(boxes["mouth"], landmarks[list(ibug68.OUTER_LIP)])
    crops = regions.crop_regions("seed003", random_clip(), landmarks[None])
    sizes = regions.REGION_TEMPLATES["seed003"].sizes
    assert {name: crop.shape[1:3] for name, crop in crops.items()} == {n: (h, w) for n, (w, h) in sizes.items()}


@pytest.mark.parametrize("name", TEMPLATES)
def test_boxes_come_from_the_first_frame_and_stay_fixed(name):
    frames = random_clip(4)
    landmarks = np.repeat(face_landmarks(jitter=0.5)[None], 4, axis=0)
    moved = landmarks.copy()
    moved[1:] += (6.0, -4.0)                 # the face moves after frame 0: the boxes do not
    moved[3] = np.nan
    crops = regions.crop_regions(name, frames, landmarks)
    for region, crop in regions.crop_regions(name, frames, moved).items():
        np.testing.assert_array_equal(crop, crops[region])
    template = regions.REGION_TEMPLATES[name]
    boxes = regions.region_boxes(name, landmarks[0], FRAME_SHAPE)
    keep = regions.region_mask(name, landmarks[0], FRAME_SHAPE)
    for t in range(len(frames)):                # every frame cut with frame 0's boxes
        for region, box in boxes.items():
            single = regions.crop_region(frames[t:t + 1], box, template.sizes[region], keep=keep)
            np.testing.assert_array_equal(single[0], crops[region][t])
    shifted = landmarks.copy()
    shifted[0] += (6.0, -4.0)
    assert regions.region_boxes(name, shifted[0], FRAME_SHAPE) != boxes


def test_mirror_pairs():
    assert dict(regions.MIRROR_PAIRS) == {
        "seed002": (("right_brow_eye", "left_brow_eye"), ("right_cheek", "left_cheek")), "seed003": ()}
    template = regions.REGION_TEMPLATES["seed002"]
    assert template.mirror_partner("left_cheek") == "right_cheek" and template.mirror_partner("nose") == "nose"
    with pytest.raises(KeyError, match="forehead"):
        template.mirror_partner("forehead")


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_flip_swaps_each_mirror_pair(name, seed):
    """On the flipped clip, a region's box is the mirror of its partner's, and so is its crop.

    The landmarks are made asymmetric and the face is off-centre, so a wrong pairing moves boxes. The
    boxes mirror exactly (no edge of these float landmarks falls half-way between pixel centres); the
    crops agree to one grey level: cv2's fixed-point resize rounds mirrored weights differently.
    """
    template = regions.REGION_TEMPLATES[name]
    frames, landmarks = random_clip(2, seed), face_landmarks(jitter=1.0, seed=seed)[None]
    flipped, flipped_landmarks = augment.hflip(frames, landmarks)
    width = FRAME_SHAPE[1]
    boxes = regions.region_boxes(name, landmarks[0], FRAME_SHAPE)
    flipped_boxes = regions.region_boxes(name, flipped_landmarks[0], FRAME_SHAPE)
    crops = regions.crop_regions(name, frames, landmarks)
    flipped_crops = regions.crop_regions(name, flipped, flipped_landmarks)
    for region in template.regions:
        partner = template.mirror_partner(region)
        x0, y0, x1, y1 = boxes[partner]
        assert flipped_boxes[region] == (width - x1, y0, width - x0, y1), region
        difference = flipped_crops[region].astype(int) - crops[partner][:, :, ::-1]
        assert np.abs(difference).max() <= 1, region
    np.testing.assert_array_equal(regions.region_mask(name, flipped_landmarks[0], FRAME_SHAPE),
                                  regions.region_mask(name, landmarks[0], FRAME_SHAPE)[:, ::-1])


def test_seed003_masks_the_eyes_inside_its_regions():
    landmarks = face_landmarks()
    keep = regions.region_mask("seed003", landmarks, FRAME_SHAPE)
    assert keep.shape == FRAME_SHAPE and keep.dtype == bool
    pixel = lambda indices: np.floor(landmarks[list(indices)] + 0.5).astype(int)  # noqa: E731
    for x, y in pixel(ibug68.RIGHT_EYE + ibug68.LEFT_EYE):
        assert not keep[y, x], (x, y)
    for x, y in pixel(ibug68.RIGHT_BROW + ibug68.LEFT_BROW + (30, 51, 57)):
        assert keep[y, x], (x, y)
    boxes = regions.region_boxes("seed003", landmarks, FRAME_SHAPE)
    outside = np.ones(FRAME_SHAPE, bool)
    for x0, y0, x1, y1 in boxes.values():
        outside[y0:y1, x0:x1] = False
    assert not keep[outside].any()
    # Crops of a uniform clip are blanked to 0 exactly where the eyes are, and nowhere in seed002's.
    clip = np.full((1, *FRAME_SHAPE, 3), 200, np.uint8)
    crops = regions.crop_regions("seed003", clip, landmarks[None])
    assert (crops["brows_forehead"] == 0).mean() > 0.1 and (crops["mouth"] == 200).all()
    x0, y0, x1, y1 = boxes["brows_forehead"]
    unresized = regions.crop_region(clip, boxes["brows_forehead"], (x1 - x0, y1 - y0), keep=keep)
    np.testing.assert_array_equal(unresized[0, ..., 0] == 200, keep[y0:y1, x0:x1])
    assert all((crop == 200).all() for crop in regions.crop_regions("seed002", clip, landmarks[None]).values())
    np.testing.assert_array_equal(regions.region_mask("seed002", landmarks, FRAME_SHAPE).sum(),
                                  (~_outside_of(regions.region_boxes("seed002", landmarks, FRAME_SHAPE))).sum())


def _outside_of(boxes: dict[str, tuple[int, int, int, int]]) -> np.ndarray:
    outside = np.ones(FRAME_SHAPE, bool)
    for x0, y0, x1, y1 in boxes.values():
        outside[y0:y1, x0:x1] = False
    return outside


def test_bad_landmarks_and_boxes_are_named():
    landmarks = face_landmarks()
    width = FRAME_SHAPE[1]
    # Shift the face right until seed002's left_brow_eye (canvas x 140-240) starts past the frame's edge
    # while right_brow_eye (canvas x 0-100) is still inside it.
    face_left, face_width = landmarks[17, 0], landmarks[26, 0] - landmarks[17, 0]
    shifted = landmarks + (width + 2 - (face_left + 140 / 240 * face_width), 0.0)
    with pytest.raises(UserError, match=r"region 'left_brow_eye' of template 'seed002' is empty"):
        regions.region_boxes("seed002", shifted, FRAME_SHAPE)
    with pytest.raises(UserError, match="'brows_forehead' of template 'seed003'"):
        regions.region_boxes("seed003", landmarks + (0.0, 200.0), FRAME_SHAPE)
    with pytest.raises(UserError, match="seed002 face box is empty"):
        regions.region_boxes("seed002", np.zeros((68, 2)), FRAME_SHAPE)
    with pytest.raises(UserError, match="degenerate"):
        regions.region_boxes("seed003", np.zeros((68, 2)), FRAME_SHAPE)
    with pytest.raises(UserError, match=r"\[68,2\]"):
        regions.region_boxes("seed002", landmarks[:5], FRAME_SHAPE)
    with pytest.raises(UserError, match="non-finite"):
        regions.region_boxes("seed002", np.full((68, 2), np.nan), FRAME_SHAPE)
    with pytest.raises(UserError, match="unknown face region template 'seed009'"):
        regions.region_boxes("seed009", landmarks, FRAME_SHAPE)
    with pytest.raises(ValueError, match="frame_shape"):
        regions.region_boxes("seed002", landmarks, (*FRAME_SHAPE, 3))
    with pytest.raises(ValueError, match="outside"):
        regions.crop_region(random_clip(1), (90, 0, 110, 10), (8, 8))
    with pytest.raises(ValueError, match="keep"):
        regions.crop_region(random_clip(1), (0, 0, 10, 10), (8, 8), keep=np.ones((10, 10), bool))


def test_crop_region_keeps_the_dtype_and_orients_the_size():
    frames = random_clip(2).astype(np.float32) / 255
    crop = regions.crop_region(frames, (10, 20, 50, 40), (16, 8))        # 40 x 20 box -> 16 wide, 8 high
    assert crop.shape == (2, 8, 16, 3) and crop.dtype == np.float32
    expected = cv2.resize(frames[1, 20:40, 10:50], (16, 8), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(crop[1], expected, atol=1e-6)
    np.testing.assert_array_equal(regions.crop_region(frames, (10, 20, 50, 40), (40, 20)), frames[:, 20:40, 10:50])


# --------------------------------------------------------------------------- #
# Landmark hulls (seed 001's Grad-CAM regions).
# --------------------------------------------------------------------------- #

def _template_landmarks(size: int) -> np.ndarray:
    """The synthetic faces' neutral 68 landmarks, in pixels of a size x size crop."""
    return render.template()[:68] * (size - 1)


def test_hull_mask_covers_the_features_and_not_the_rest():
    size = 64
    landmarks = _template_landmarks(size)
    mask = regions.hull_mask(landmarks, (size, size))
    assert mask.shape == (size, size) and mask.dtype == bool
    for name, indices in regions.FEATURE_GROUPS.items():
        for x, y in np.round(landmarks[list(indices)]).astype(int):
            assert mask[y, x], (name, x, y)
    for x, y in ((0, 0), (size - 1, 0), (0, size - 1), (size - 1, size - 1)):
        assert not mask[y, x]
    chin = np.round(landmarks[8]).astype(int)
    cheek = np.round(render.template()[render.CHEEK_RIGHT] * (size - 1)).astype(int)
    assert not mask[chin[1], chin[0]] and not mask[cheek[1], cheek[0]]
    assert 0.15 < mask.mean() < 0.45
    wider = regions.hull_mask(landmarks, (size, size), margin=0.4)
    assert (wider >= mask).all() and wider.mean() > mask.mean()
    # The margin follows the face: the same face at twice the size covers the same share.
    assert abs(regions.hull_mask(_template_landmarks(2 * size), (2 * size,) * 2).mean() - mask.mean()) < 0.02
    np.testing.assert_array_equal(regions.hull_masks(np.stack([landmarks, landmarks]), (size, size))[1], mask)
    with pytest.raises(ValueError, match="degenerate"):
        regions.hull_mask(np.zeros((68, 2)), (size, size))


def test_hull_mask_is_the_dilated_hull():
    """Against OpenCV's signed distance to each hull, on every pixel of a non-square frame."""
    landmarks = face_landmarks(jitter=0.8)
    margin = 0.2
    mask = regions.hull_mask(landmarks, FRAME_SHAPE, margin=margin)
    reach = margin * regions.face_size(landmarks)
    expected = np.zeros(FRAME_SHAPE, bool)
    for indices in regions.FEATURE_GROUPS.values():
        hull = cv2.convexHull(landmarks[list(indices)].astype(np.float32))
        for y in range(FRAME_SHAPE[0]):
            for x in range(FRAME_SHAPE[1]):
                expected[y, x] |= cv2.pointPolygonTest(hull, (float(x), float(y)), True) >= -reach
    disagree = mask != expected
    assert disagree.sum() <= 2, np.argwhere(disagree)      # float ties on the margin's edge only
