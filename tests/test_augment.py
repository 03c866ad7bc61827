"""Tests for merjax.data.augment: flips and rotations with landmarks, class-balanced resampling."""

from __future__ import annotations

import numpy as np
import pytest

from merjax.data import augment


def random_clip(seed: int, frames: int = 3, height: int = 12, width: int = 16):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    landmarks = rng.uniform(0, width - 1, size=(frames, 68, 2)).astype(np.float32)
    return pixels, landmarks


def blob(height: int, width: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    image = 255.0 * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))
    return np.repeat(image[..., None], 3, axis=-1).astype(np.float32)


def centroid(image: np.ndarray) -> np.ndarray:
    weights = image[..., 0].astype(np.float64)
    rows, cols = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()


def test_mirror_permutation_is_an_involution_with_known_pairs():
    mirror = augment.IBUG68_MIRROR
    np.testing.assert_array_equal(mirror[mirror], np.arange(68))
    for left, right in [(0, 16), (8, 8), (17, 26), (21, 22), (27, 27), (30, 30), (31, 35), (33, 33),
                        (36, 45), (39, 42), (40, 47), (41, 46), (48, 54), (51, 51), (55, 59),
                        (57, 57), (60, 64), (62, 62), (65, 67), (66, 66)]:
        assert mirror[left] == right and mirror[right] == left


def test_hflip_twice_is_identity():
    frames, landmarks = random_clip(0)
    once, once_landmarks = augment.hflip(frames, landmarks)
    twice, twice_landmarks = augment.hflip(once, once_landmarks)
    np.testing.assert_array_equal(twice, frames)
    np.testing.assert_allclose(twice_landmarks, landmarks, atol=1e-5)


def test_hflip_mirrors_pixels_and_renumbers_landmarks():
    frames, landmarks = random_clip(1, width=16)
    flipped, flipped_landmarks = augment.hflip(frames, landmarks)
    np.testing.assert_array_equal(flipped[:, :, 0], frames[:, :, 15])
    # The right eye's outer corner (36) of the mirrored face is where the left eye's outer corner (45) was, mirrored.
    np.testing.assert_allclose(flipped_landmarks[:, 36, 0], 15 - landmarks[:, 45, 0])
    np.testing.assert_allclose(flipped_landmarks[:, 36, 1], landmarks[:, 45, 1])
    np.testing.assert_allclose(flipped_landmarks[:, 8, 0], 15 - landmarks[:, 8, 0])


def test_hflip_without_landmarks():
    frames, _ = random_clip(2)
    flipped, landmarks = augment.hflip(frames[0])
    assert landmarks is None
    np.testing.assert_array_equal(flipped, frames[0, :, ::-1])


def test_rotate_90_moves_a_bright_pixel_where_the_matrix_says():
    image = np.zeros((9, 9, 3), np.uint8)
    image[4, 6] = 255                                  # two pixels right of the centre (4, 4)
    rotated, _ = augment.rotate(image, 90.0)
    matrix = augment.rotation_matrix(90.0, 9, 9)
    np.testing.assert_allclose(matrix @ [6, 4, 1], [4, 2], atol=1e-9)  # counter-clockwise: to above the centre
    assert rotated[2, 4].tolist() == [255, 255, 255]
    assert rotated.sum() == 3 * 255


def test_rotate_clip_and_landmarks_follow_the_pixels():
    height, width, angle = 48, 64, 30.0
    frame = blob(height, width, x=44.0, y=30.0)
    landmarks = np.tile(np.array([44.0, 30.0], np.float32), (2, 68, 1))
    rotated, moved = augment.rotate(np.stack([frame, frame]), angle, landmarks)
    assert rotated.shape == (2, height, width, 3) and rotated.dtype == np.float32
    expected = augment.rotation_matrix(angle, height, width) @ [44.0, 30.0, 1.0]
    np.testing.assert_allclose(moved[1, 36], expected, atol=1e-4)
    np.testing.assert_allclose(centroid(rotated[0]), expected, atol=0.05)
    np.testing.assert_array_equal(rotated[0], rotated[1])


def test_random_flip_rotate_applies_one_transform_to_the_whole_clip():
    frames = np.repeat(random_clip(3)[0][:1], 4, axis=0)
    out = augment.random_flip_rotate_streams({"frames": frames}, np.random.default_rng(0), max_angle=10.0)
    assert not np.array_equal(out["frames"][0], frames[0])
    for frame in out["frames"][1:]:
        np.testing.assert_array_equal(frame, out["frames"][0])


def test_random_flip_rotate_certain_flip_without_rotation_is_hflip():
    frames, landmarks = random_clip(4)
    out = augment.random_flip_rotate_streams({"frames": frames, "landmarks": landmarks}, np.random.default_rng(0),
                                             max_angle=0.0, flip_prob=1.0)
    expected, expected_landmarks = augment.hflip(frames, landmarks)
    np.testing.assert_array_equal(out["frames"], expected)
    np.testing.assert_allclose(out["landmarks"], expected_landmarks, atol=1e-4)


def _sample_with_regions(seed: int = 5):
    frames, landmarks = random_clip(seed, frames=2, height=12, width=16)
    rng = np.random.default_rng(seed + 1)
    return {"frames": frames, "landmarks": landmarks,
            "region_left_eye": rng.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8),
            "region_right_eye": rng.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8),
            "region_mouth": rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)}


PAIRS = (("region_left_eye", "region_right_eye"), ("region_left_brow", "region_right_brow"))


def test_flip_swaps_mirror_pairs_mirrors_every_stream_and_twice_is_identity():
    sample = _sample_with_regions()
    flipped = augment.flip_streams(sample, PAIRS)          # the brow pair is absent from the sample: skipped
    assert list(flipped) == list(sample)
    np.testing.assert_array_equal(flipped["region_left_eye"], sample["region_right_eye"][:, :, ::-1])
    np.testing.assert_array_equal(flipped["region_right_eye"], sample["region_left_eye"][:, :, ::-1])
    np.testing.assert_array_equal(flipped["region_mouth"], sample["region_mouth"][:, :, ::-1])
    np.testing.assert_array_equal(flipped["frames"], sample["frames"][:, :, ::-1])
    np.testing.assert_allclose(flipped["landmarks"][:, 36, 0], 15 - sample["landmarks"][:, 45, 0])
    twice = augment.flip_streams(flipped, PAIRS)
    for name, array in sample.items():
        np.testing.assert_allclose(twice[name], array, atol=1e-5, err_msg=name)


def test_one_draw_serves_every_stream_each_rotated_about_its_own_centre():
    sample = _sample_with_regions()
    out = augment.random_flip_rotate_streams(sample, np.random.default_rng(3), max_angle=20.0, flip_prob=1.0,
                                             mirror_pairs=PAIRS)
    draw = np.random.default_rng(3)
    assert draw.random() < 1.0
    angle = draw.uniform(-20.0, 20.0)
    expected = augment.rotate_streams(augment.flip_streams(sample, PAIRS), angle)
    for name in sample:
        np.testing.assert_allclose(out[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(out["region_mouth"], augment.rotate(sample["region_mouth"][:, :, ::-1], angle)[0])
    flipped_frames, flipped_points = augment.hflip(sample["frames"], sample["landmarks"])
    np.testing.assert_allclose(out["landmarks"], augment.rotate(flipped_frames, angle, flipped_points)[1], atol=1e-4)


def test_flip_refuses_a_half_present_pair_or_pairs_of_other_shapes():
    sample = _sample_with_regions()
    with pytest.raises(ValueError, match="region_left_eye.*not its partner"):
        augment.flip_streams({k: v for k, v in sample.items() if k != "region_right_eye"}, PAIRS)
    with pytest.raises(ValueError, match="must agree"):
        augment.flip_streams(sample, [("region_left_eye", "region_mouth")])
    with pytest.raises(ValueError, match="lacks"):
        augment.flip_streams({"landmarks": sample["landmarks"]})


def test_per_class_counts():
    np.testing.assert_array_equal(augment.per_class_counts([0, 2, 2, 0, 2], 4), [2, 0, 3, 0])
    with pytest.raises(ValueError, match=r"label 4 is outside 0..3"):
        augment.per_class_counts([0, 4], 4)


def test_balanced_multipliers_table_1():
    multipliers = augment.balanced_multipliers({0: 2168, 1: 1856, 2: 1408, 3: 5016}, 15000)
    assert multipliers == pytest.approx({0: 15000 / 2168, 1: 15000 / 1856, 2: 15000 / 1408, 3: 15000 / 5016})
    assert augment.balanced_multipliers([2, 4], 8) == {0: 4.0, 1: 2.0}
    with pytest.raises(ValueError, match="class 1 has 0 samples"):
        augment.balanced_multipliers([3, 0, 2], 10)


@pytest.mark.parametrize("target", [2, 10, 23])
def test_balanced_resample_exact_counts_and_floor_ceil_use(target):
    labels = np.repeat([0, 1, 2], [5, 3, 7])
    indices = augment.balanced_resample(labels, target, np.random.default_rng(0), num_classes=3)
    np.testing.assert_array_equal(np.bincount(labels[indices], minlength=3), [target] * 3)
    uses = np.bincount(indices, minlength=len(labels))
    for label, count in enumerate([5, 3, 7]):
        class_uses = uses[labels == label]
        assert set(class_uses) <= {target // count, -(-target // count)}
        assert class_uses.sum() == target


def test_balanced_resample_is_seeded():
    labels = np.repeat([0, 1], [7, 4])
    first = augment.balanced_resample(labels, 10, np.random.default_rng(5))
    again = augment.balanced_resample(labels, 10, np.random.default_rng(5))
    np.testing.assert_array_equal(first, again)


def test_balanced_resample_never_drops_a_class():
    with pytest.raises(ValueError, match="class 1 has no sample"):
        augment.balanced_resample([0, 0, 2], 4, np.random.default_rng(0), num_classes=3)
