"""merjax.faces: dlib on a real and on synthetic faces, FAN decoding with planted heatmaps, the face crop."""

from __future__ import annotations

import pickle

import chex
import cv2
import numpy as np
import pytest

from merjax.faces import crop, landmarks
from tests import fake_databases
from merjax.faces.landmarks import Box

skimage_data = pytest.importorskip("skimage.data")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def dlib_detector() -> landmarks.DlibLandmarks:
    pytest.importorskip("dlib")
    return landmarks.make_detector("dlib")


def _inter_ocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0)))


# --------------------------------------------------------------------------- #
# dlib
# --------------------------------------------------------------------------- #

def test_dlib_finds_the_astronaut_and_orders_her_landmarks(dlib_detector):
    image = skimage_data.astronaut()  # 512x512, one real face (Eileen Collins)
    box = dlib_detector.detect_face(image)
    assert box is not None
    np.testing.assert_allclose([box.left, box.top, box.right, box.bottom], [175, 76, 265, 166], atol=8)

    points = dlib_detector.landmarks(image, box)
    chex.assert_shape(points, (68, 2))
    assert points.dtype == np.float32
    eyes_y, nose_tip_y, mouth_y = points[36:48, 1].max(), points[30, 1], points[48:68, 1].min()
    assert eyes_y < nose_tip_y < mouth_y
    assert np.all(np.diff(points[0:9, 0]) > 0) and np.all(np.diff(points[8:17, 0]) > 0)  # jaw left -> right
    assert points[8, 1] > points[48:68, 1].max()  # chin under the mouth
    assert points[36:42, 0].mean() < points[27:36, 0].mean() < points[42:48, 0].mean()
    slack = 0.25 * box.width
    assert np.all(points >= [box.left - slack, box.top - slack])
    assert np.all(points <= [box.right + slack, box.bottom + slack])


def test_dlib_landmarks_on_synthetic_faces(dlib_detector):
    """dlib against the renderer's ground truth at 128 px.

    Measured over identities 0..99: all detected; mean error / inter-ocular
    distance (eye centres) 0.068 (median 0.068, max 0.088), dominated by the
    jaw, whose synthetic contour is not the iBUG one (inner points ~0.03-0.05).
    The bounds leave headroom for other dlib builds; a wrong landmark order
    (e.g. mirrored) gives errors above 0.5.
    """
    from datasets.synthetic_me import render

    size, errors = 128, []
    for i in range(6):
        identity = render.sample_identity(np.random.default_rng([0, 0, i]))
        image = np.clip(render.render_neutral(identity, size), 0, 255).astype(np.uint8)
        truth = identity.control_points[:68] * size
        box = dlib_detector.detect_face(image)
        assert box is not None, f"no face found in synthetic identity {i}"
        points = dlib_detector.landmarks(image, box)
        errors.append(np.linalg.norm(points - truth, axis=1).mean() / _inter_ocular(truth))
        mirrored = points[render.MIRROR[:68]]
        assert np.linalg.norm(mirrored - truth, axis=1).mean() / _inter_ocular(truth) > 0.5
    assert max(errors) < 0.11, errors
    assert np.mean(errors) < 0.085, errors


def test_no_face_gives_none_and_first_face_skips_blank_frames(dlib_detector):
    rng = np.random.default_rng(0)
    assert dlib_detector.detect_face(np.full((128, 128, 3), 128, np.uint8)) is None
    assert dlib_detector.detect_face(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) is None

    face = skimage_data.astronaut()[40:296, 96:352]  # 256x256 around the face
    blank = np.zeros_like(face)
    found = landmarks.first_face(np.stack([blank, blank, face, face]), dlib_detector, max_tries=3)
    assert found is not None
    assert found.frame_index == 2
    np.testing.assert_array_equal(found.landmarks, dlib_detector.landmarks(face, found.box))
    assert landmarks.first_face([blank, blank, face], dlib_detector, max_tries=2) is None
    with pytest.raises(ValueError, match="max_tries"):
        landmarks.first_face([face], dlib_detector, max_tries=0)


def test_dlib_pickles_without_its_models_and_errors_name_paths(dlib_detector, tmp_path, monkeypatch):
    dlib_detector.detect_face(np.zeros((64, 64, 3), np.uint8))  # loads the models
    clone = pickle.loads(pickle.dumps(dlib_detector))
    assert clone._models is None and clone.predictor_path == dlib_detector.predictor_path

    missing = tmp_path / "nope.dat"
    with pytest.raises(FileNotFoundError, match="nope.dat"):
        landmarks.DlibLandmarks(str(missing))
    real_find_spec = landmarks.importlib.util.find_spec
    monkeypatch.setattr(landmarks.importlib.util, "find_spec",
                        lambda name: None if name == "face_recognition_models" else real_find_spec(name))
    with pytest.raises(ModuleNotFoundError, match="pip install dlib-bin face-recognition-models"):
        landmarks.DlibLandmarks()


def test_bad_images_and_backend_names_are_named(dlib_detector):
    with pytest.raises(ValueError, match="float32"):
        dlib_detector.detect_face(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        dlib_detector.detect_face(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="'mediapipe'.*dlib.*fan"):
        landmarks.make_detector("mediapipe")
    with pytest.raises(ValueError, match="right > left"):
        Box(10, 0, 5, 10)


# --------------------------------------------------------------------------- #
# FAN: preprocessing and decoding, with TorchScript stand-ins for 2DFAN4
# --------------------------------------------------------------------------- #

class _PlantedHeatmaps(torch.nn.Module):
    """Ignores its input and returns fixed heatmaps, as 2DFAN4's [1,68,64,64] output."""

    def __init__(self, heatmaps: np.ndarray):
        super().__init__()
        self.register_buffer("heatmaps", torch.from_numpy(heatmaps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heatmaps[None].expand(x.shape[0], -1, -1, -1)


class _PooledInput(torch.nn.Module):
    """Heatmaps = the input's red channel average-pooled 4x4, for all 68 points: the peak sits
    wherever the crop put the image's brightest spot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x[:, :1], 4).expand(-1, 68, -1, -1)


class _NoDetector:
    name = "none"

    def detect_face(self, image):
        return None

    def landmarks(self, image, box):
        raise AssertionError("not used")


def _save_script(module: torch.nn.Module, path) -> str:
    torch.jit.script(module).save(str(path))
    return str(path)


def _fan_expected(cells: np.ndarray, box: Box) -> np.ndarray:
    """Image pixels of heatmap cells (x, y) by face_alignment's formulas, written out:
    centre raised by 12% of the box height, span 200 * (w + h) / 195, 64 cells over the span."""
    span = 200.0 * (box.width + box.height) / 195.0
    centre = np.array([box.center[0], box.center[1] - 0.12 * box.height])
    return centre - span / 2 + cells * span / 64


def test_fan_planted_peaks_map_to_image_coordinates(tmp_path):
    rng = np.random.default_rng(1)
    cells = rng.integers(1, 63, (68, 2))
    heatmaps = np.zeros((68, 64, 64), np.float32)
    heatmaps[np.arange(68), cells[:, 1], cells[:, 0]] = 1.0  # isolated peaks: no quarter shift
    fan = landmarks.FanLandmarks(_save_script(_PlantedHeatmaps(heatmaps), tmp_path / "fan.pt"),
                                 face_detector=_NoDetector())
    box = Box(100.0, 80.0, 190.0, 170.0)
    points = fan.landmarks(np.zeros((300, 320, 3), np.uint8), box)
    chex.assert_shape(points, (68, 2))
    np.testing.assert_allclose(points, _fan_expected(cells + 0.5, box), atol=0.5)
    assert fan.detect_face(np.zeros((8, 8, 3), np.uint8)) is None
    if landmarks.importlib.util.find_spec("dlib") is not None:  # the default detector: dlib's HOG
        default = landmarks.make_detector("fan", landmark_weights=fan.landmark_weights)
        assert isinstance(default, landmarks.FanLandmarks)
        assert isinstance(default.face_detector, landmarks.DlibLandmarks)


def test_fan_quarter_cell_shift_toward_the_higher_neighbour(tmp_path):
    heatmaps = np.zeros((68, 64, 64), np.float32)
    heatmaps[:, 20, 30] = 1.0
    heatmaps[:, 20, 31] = 0.5      # right neighbour higher than left: +0.25 in x
    heatmaps[:, 19, 30] = 0.3      # upper neighbour higher than lower: -0.25 in y
    heatmaps[1] = 0.0
    heatmaps[1, 0, 40] = 1.0       # on the border: no shift
    heatmaps[1, 1, 40] = 0.5
    fan = landmarks.FanLandmarks(_save_script(_PlantedHeatmaps(heatmaps), tmp_path / "fan.pt"),
                                 face_detector=_NoDetector())
    box = Box(10.0, 20.0, 74.0, 84.0)
    points = fan.landmarks(np.zeros((128, 128, 3), np.uint8), box)
    np.testing.assert_allclose(points[0], _fan_expected(np.array([30.75, 20.25]), box), atol=1e-3)
    np.testing.assert_allclose(points[1], _fan_expected(np.array([40.5, 0.5]), box), atol=1e-3)
    decoded = landmarks.decode_heatmaps(heatmaps)
    np.testing.assert_allclose(decoded[[0, 1, 67]], [[30.75, 20.25], [40.5, 0.5], [30.75, 20.25]])


@pytest.mark.parametrize("spot, box", [((151.3, 118.6), Box(100.0, 80.0, 200.0, 180.0)),
                                       ((20.0, 30.0), Box(-10.0, 0.0, 70.0, 80.0))])  # crop leaves the image
def test_fan_crop_and_inverse_map_return_an_image_point_to_itself(tmp_path, spot, box):
    """End to end through the crop: a bright spot in the image comes back where it was,
    within half a heatmap cell (span / 64 image pixels; argmax + quarter shift resolve a quarter cell,
    measured errors up to 0.35 cell)."""
    yy, xx = np.mgrid[0:240, 0:260]
    image = np.zeros((240, 260, 3), np.uint8)
    image[..., 0] = 255 * np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * 3.0 ** 2))
    fan = landmarks.FanLandmarks(_save_script(_PooledInput(), tmp_path / "pool.pt"), face_detector=_NoDetector())
    points = fan.landmarks(image, box)
    cell = 200.0 * (box.width + box.height) / 195.0 / 64
    assert np.abs(points - np.array(spot)).max() < 0.5 * cell, (points[0], spot, cell)


def test_fan_crop_matches_face_alignment_transcription():
    """``fan_crop`` against a line-by-line transcription of face_alignment 1.5 ``utils.crop``."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (200, 220, 3), dtype=np.uint8)

    def reference(center, scale, resolution=256.0):
        def inv(point):
            h = 200.0 * scale
            t = np.array([[resolution / h, 0, resolution * (-center[0] / h + 0.5)],
                          [0, resolution / h, resolution * (-center[1] / h + 0.5)], [0, 0, 1]])
            return (np.linalg.inv(t) @ np.array([point[0], point[1], 1.0]))[:2].astype(np.int32)
        ul, br = inv([1, 1]), inv([resolution, resolution])
        new = np.zeros((br[1] - ul[1], br[0] - ul[0], 3), np.uint8)
        ht, wd = image.shape[:2]
        new_x = [max(1, -ul[0] + 1), min(br[0], wd) - ul[0]]
        new_y = [max(1, -ul[1] + 1), min(br[1], ht) - ul[1]]
        old_x = [max(1, ul[0] + 1), min(br[0], wd)]
        old_y = [max(1, ul[1] + 1), min(br[1], ht)]
        new[new_y[0] - 1:new_y[1], new_x[0] - 1:new_x[1]] = image[old_y[0] - 1:old_y[1], old_x[0] - 1:old_x[1]]
        return cv2.resize(new, (256, 256), interpolation=cv2.INTER_LINEAR)

    for box in (Box(60, 50, 150, 140), Box(-20, -15, 70, 80), Box(150, 120, 240, 215)):
        center, scale = landmarks.fan_center_scale(box, 195.0)
        np.testing.assert_array_equal(landmarks.fan_crop(image, center, scale), reference(center, scale))


def test_fan_errors_name_the_file(tmp_path):
    missing = tmp_path / "2DFAN4-missing.zip"
    with pytest.raises(FileNotFoundError, match="2DFAN4-missing.zip"):
        landmarks.FanLandmarks(str(missing), face_detector=_NoDetector())
    state_dict = tmp_path / "2DFAN4-11f355bf06.pth.tar"
    torch.save({"conv1.weight": torch.zeros(1)}, state_dict)
    fan = landmarks.FanLandmarks(str(state_dict), face_detector=_NoDetector())
    with pytest.raises(ValueError, match="2DFAN4-11f355bf06.pth.tar.*not a TorchScript"):
        fan.landmarks(np.zeros((64, 64, 3), np.uint8), Box(10, 10, 50, 50))
    wrong = landmarks.FanLandmarks(_save_script(_PlantedHeatmaps(np.zeros((5, 64, 64), np.float32)),
                                                tmp_path / "five.pt"), face_detector=_NoDetector())
    with pytest.raises(ValueError, match=r"five.pt.*\(1, 5, 64, 64\)"):
        wrong.landmarks(np.zeros((64, 64, 3), np.uint8), Box(10, 10, 50, 50))
    assert pickle.loads(pickle.dumps(wrong))._net is None


# --------------------------------------------------------------------------- #
# crop
# --------------------------------------------------------------------------- #

def test_face_box_is_square_centred_and_keeps_the_margin():
    rng = np.random.default_rng(3)
    points = rng.uniform([40, 60], [140, 200], (68, 2))  # taller than wide
    margin = 0.15
    box = crop.face_box(points, margin)
    assert type(box.left) is float
    assert box.width == pytest.approx(box.height)
    longer = (points.max(axis=0) - points.min(axis=0)).max()
    assert box.width == pytest.approx(longer * (1 + 2 * margin))
    np.testing.assert_allclose(box.center, (points.min(axis=0) + points.max(axis=0)) / 2)
    gap = margin * longer - 1e-9
    assert np.all(points - [box.left, box.top] >= gap) and np.all([box.right, box.bottom] - points >= gap)
    with pytest.raises(ValueError, match="margin"):
        crop.face_box(points, -0.1)
    with pytest.raises(ValueError, match=r"\(68, 3\)"):
        crop.face_box(np.zeros((68, 3)), 0.1)
    with pytest.raises(ValueError, match="no area"):
        crop.face_box(np.ones((68, 2)), 0.1)


def _patterned_frames(t: int, h: int, w: int) -> np.ndarray:
    ti, y, x, c = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((7 * x + 13 * y + 29 * ti + 61 * c) % 256).astype(np.uint8)


def test_crop_without_resize_is_a_slice_and_padding_replicates_edges():
    frames = _patterned_frames(3, 40, 50)
    inside = crop.crop_frames(frames, Box(12.0, 5.0, 32.0, 25.0), 20)
    np.testing.assert_array_equal(inside, frames[:, 5:25, 12:32])

    outside = crop.crop_frames(frames, Box(-5.0, 30.0, 15.0, 50.0), 20)  # 5 px left, 10 px below
    chex.assert_shape(outside, (3, 20, 20, 3))
    padded = np.pad(frames, ((0, 0), (0, 10), (5, 0), (0, 0)), mode="edge")
    np.testing.assert_array_equal(outside, padded[:, 30:50, 0:20])
    assert np.all(outside[:, :, :5] == outside[:, :, 5:6])  # left pad repeats the first column
    assert np.all(outside[:, 10:] == outside[:, 9:10])       # bottom pad repeats the last row

    with pytest.raises(ValueError, match="does not overlap"):
        crop.crop_frames(frames, Box(60.0, 0.0, 80.0, 20.0), 20)
    with pytest.raises(ValueError, match="float32.*\\(3, 40, 50, 3\\)"):
        crop.crop_frames(frames.astype(np.float32), Box(0, 0, 10, 10), 8)
    with pytest.raises(ValueError, match="size"):
        crop.crop_frames(frames, Box(0, 0, 10, 10), 0)


@pytest.mark.parametrize("box, size", [(Box(30.3, 22.8, 130.3, 122.8), 64),   # shrink: INTER_AREA
                                       (Box(42.0, 73.0, 82.0, 113.0), 112),    # enlarge: INTER_LINEAR
                                       (Box(-20.0, 70.0, 80.0, 170.0), 50)])   # shrink, padded
def test_a_dot_lands_at_its_crop_coordinate(box, size):
    spot = np.array([[61.7, 93.2]])
    yy, xx = np.mgrid[0:150, 0:160]
    frame = np.zeros((1, 150, 160, 3), np.uint8)
    frame[0, ..., 1] = np.round(250 * np.exp(-((xx - spot[0, 0]) ** 2 + (yy - spot[0, 1]) ** 2) / (2 * 2.5 ** 2)))
    cropped = crop.crop_frames(frame, box, size)[0, ..., 1].astype(np.float64)
    v, u = np.mgrid[0:size, 0:size]
    centroid = np.array([(u * cropped).sum(), (v * cropped).sum()]) / cropped.sum()
    expected = crop.to_crop_coordinates(spot, box, size)[0]
    np.testing.assert_allclose(centroid, expected, atol=0.05)  # measured <= 0.004; without the half-pixel terms 0.18-0.9
    np.testing.assert_allclose(crop.from_crop_coordinates(expected[None], box, size)[0], spot[0], atol=1e-4)


def test_crop_coordinates_keep_leading_axes_and_name_bad_input():
    box = Box(10.0, 20.0, 74.0, 84.0)
    points = np.random.default_rng(4).uniform(0, 100, (5, 68, 2))
    mapped = crop.to_crop_coordinates(points, box, 32)
    chex.assert_shape(mapped, (5, 68, 2))
    assert mapped.dtype == np.float32
    np.testing.assert_allclose(mapped, (points - [10, 20] + 0.5) / 2 - 0.5, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(68,\)"):
        crop.to_crop_coordinates(np.zeros(68), box, 32)
    with pytest.raises(ValueError, match="<U1"):
        crop.to_crop_coordinates(np.array([["a", "b"]]), box, 32)
    with pytest.raises(ValueError, match="size"):
        crop.to_crop_coordinates(points, box, 2.5)


def test_a_tightly_cropped_face_is_found_in_a_padded_frame(dlib_detector):
    """Cropped database trees hold faces without context, which HOG often misses; a replicated border finds them."""
    missed = 0
    for subject in range(8):
        frames, truth = fake_databases.face_frames(subject, 2)
        tight = fake_databases.tight_crop(frames, truth[0])
        found = landmarks.first_face(tight, dlib_detector, max_tries=2)
        assert found is not None and found.frame_index == 0, subject
        if landmarks.first_face(tight, dlib_detector, max_tries=2, border_fraction=0.0) is None:
            missed += 1
            assert found.border == round(0.25 * max(tight.shape[1:3]))
        # frame 1 (drifted by <= 2 px) landmarked inside frame 0's box, in the padded frame too
        again = landmarks.landmarks_in(dlib_detector, tight[1], found.box, found.border)
        for frame, points in ((0, found.landmarks), (1, again)):
            expected = truth[frame] - np.floor(truth[0].min(0))
            inter_ocular = np.linalg.norm(expected[36:42].mean(0) - expected[42:48].mean(0))
            error = np.linalg.norm(points - expected, axis=-1).mean() / inter_ocular
            assert error < 0.15, (subject, frame, error)
    assert missed >= 3   # without the border most tight crops show no face
