"""Face detection and 68-point landmarks, offline: a dlib backend and an optional 2D-FAN backend.

The TFDS builders call these at build time, never during training. A backend
splits the work in two calls so that a builder can detect the face once, on a
clip's first frame, and then (on request) place landmarks on every frame in
that fixed box: dlib's HOG detector costs ~60 ms on a 640x480 frame, its
shape predictor ~1-4 ms.

Conventions shared by every backend and by ``merjax.faces.crop``:

* images are uint8 RGB [H, W, 3];
* coordinates are (x, y) pixels, x to the right, y down, with pixel centres
  at integer coordinates (the convention of dlib and OpenCV);
* landmarks are float32 [68, 2] in the iBUG 300-W order (jaw 0-16, brows
  17-26, nose 27-35, eyes 36-47, mouth 48-67).

Nothing here downloads anything: the dlib model ships in the
``face-recognition-models`` wheel, and the FAN backend takes a local weight
file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np

from merjax.faces.ibug68 import NUM_LANDMARKS

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
DLIB_INSTALL_HINT = "pip install dlib-bin face-recognition-models"


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned face box in pixel coordinates (see the module docstring).

    ``left``/``top``/``right``/``bottom`` are the detector's corners as given
    (for dlib, the corner pixels' centres); ``width = right - left``.
    """

    left: float
    top: float
    right: float
    bottom: float

    def __post_init__(self) -> None:
        for field in ("left", "top", "right", "bottom"):  # plain floats, also from numpy scalars
            object.__setattr__(self, field, float(getattr(self, field)))
        corners = (self.left, self.top, self.right, self.bottom)
        if not all(math.isfinite(v) for v in corners):
            raise ValueError(f"box corners must be finite, got {self}")
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError(f"box must have right > left and bottom > top, got {self}")

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    def shifted(self, offset: float) -> "Box":
        """The box moved by ``offset`` pixels along both axes (into or out of a padded image)."""
        return Box(self.left + offset, self.top + offset, self.right + offset, self.bottom + offset)

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.left + self.right), 0.5 * (self.top + self.bottom))


class LandmarkDetector(Protocol):
    """A face detector plus a 68-point landmark predictor working inside a given box."""

    name: str

    def detect_face(self, image: np.ndarray) -> Box | None:
        """The most confident face in a uint8 RGB [H,W,3] image, or None when there is none."""
        ...

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        """float32 [68,2] (x, y) pixel coordinates of the face in ``box``."""
        ...


class FirstFace(NamedTuple):
    """Where ``first_face`` found a face: the frame's index, its box and landmarks, and the border used.

    ``border`` > 0 means the face was found only once the frame was padded by
    that many pixels (a tightly cropped face, see ``first_face``); ``box`` and
    ``landmarks`` are in the unpadded frame's coordinates either way.
    """

    frame_index: int
    box: Box
    landmarks: np.ndarray
    border: int = 0


def check_image(image: Any) -> np.ndarray:
    """Returns ``image`` as a C-contiguous uint8 [H,W,3] array; raises ValueError naming it otherwise."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB image [H,W,3], got dtype {array.dtype} and shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    return np.ascontiguousarray(array)


def pad_image(image: np.ndarray, border: int) -> np.ndarray:
    """``image`` with ``border`` pixels of replicated edge on every side."""
    return cv2.copyMakeBorder(check_image(image), border, border, border, border, cv2.BORDER_REPLICATE)


def landmarks_in(detector: LandmarkDetector, image: np.ndarray, box: Box, border: int = 0) -> np.ndarray:
    """``detector.landmarks`` of the face in ``box``, computed on ``image`` padded by ``border`` pixels.

    The predictor samples pixels around the box, so a face found only in a padded
    frame keeps being landmarked in a padded frame; coordinates are the unpadded frame's.
    """
    if border == 0:
        return detector.landmarks(image, box)
    return detector.landmarks(pad_image(image, border), box.shifted(border)) - np.float32(border)


def first_face(frames: Sequence[np.ndarray] | np.ndarray, detector: LandmarkDetector,
               max_tries: int = 10, border_fraction: float = 0.25) -> FirstFace | None:
    """Detects a face on frame 0, else frame 1, ... up to ``max_tries`` frames.

    Face detectors need some context around a face, so tightly cropped
    frames (SMIC_all_cropped, CASME II's Cropped) often show no face to dlib's
    HOG detector; a frame without a face is therefore tried again padded by
    ``border_fraction`` of its longer side (replicated edge) before moving on.
    Returns None when none of those frames shows a face. A builder compares
    ``frame_index`` with 0 and ``border`` with 0 to count those cases.
    """
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    if len(frames) == 0:
        raise ValueError("frames is empty: there is no frame to detect a face on")
    for index in range(min(max_tries, len(frames))):
        frame = frames[index]
        box, border = detector.detect_face(frame), 0
        if box is None and border_fraction > 0:
            border = int(round(border_fraction * max(frame.shape[:2])))
            padded_box = detector.detect_face(pad_image(frame, border))
            box = padded_box.shifted(-border) if padded_box is not None else None
        if box is not None:
            return FirstFace(index, box, landmarks_in(detector, frame, box, border), border)
    return None


# --------------------------------------------------------------------------- #
# dlib: HOG face detector + ensemble-of-regression-trees shape predictor.
# --------------------------------------------------------------------------- #

def default_predictor_path() -> str:
    """The path of ``shape_predictor_68_face_landmarks.dat`` inside ``face_recognition_models``.

    The package is located with ``importlib.util.find_spec`` and not imported:
    its ``__init__`` imports ``pkg_resources``, which new setuptools removed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the package face_recognition_models (which ships {PREDICTOR_FILE}) is not installed: "
            f"{DLIB_INSTALL_HINT}, or pass predictor_path")
    package_dir = pathlib.Path(next(iter(spec.submodule_search_locations)))
    return str(package_dir / "models" / PREDICTOR_FILE)


class DlibLandmarks:
    """dlib's HOG frontal-face detector and its 68-point shape predictor.

    The models load on first use, and a pickled instance carries only its
    settings, so instances can be sent to worker processes cheaply.

    Args:
      predictor_path: the 68-point ``.dat`` model; by default the one shipped
        by the ``face-recognition-models`` package.
      upsample: how many times the detector upsamples the image first (each
        doubles the size; 1 finds faces down to ~40 px wide).
    """

    name = "dlib"

    def __init__(self, predictor_path: str | None = None, upsample: int = 1):
        if importlib.util.find_spec("dlib") is None:
            raise ModuleNotFoundError(f"dlib is not installed: {DLIB_INSTALL_HINT}")
        path = default_predictor_path() if predictor_path is None else str(predictor_path)
        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"dlib shape predictor not found: {path}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.predictor_path = path
        self.upsample = int(upsample)
        self._models: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_models": None}

    def _loaded(self) -> tuple[Any, Any]:
        if self._models is None:
            import dlib

            self._models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(self.predictor_path))
        return self._models

    def detect_face(self, image: np.ndarray) -> Box | None:
        """The highest-scoring HOG detection, or None."""
        image = check_image(image)
        detector, _ = self._loaded()
        rectangles, scores, _ = detector.run(image, self.upsample, 0.0)
        if len(rectangles) == 0:
            return None
        best = rectangles[int(np.argmax(scores))]
        return Box(float(best.left()), float(best.top()), float(best.right()), float(best.bottom()))

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The shape predictor's 68 points for the face in ``box`` (rounded to whole pixels by dlib)."""
        import dlib

        image = check_image(image)
        _, predictor = self._loaded()
        rectangle = dlib.rectangle(*(round(v) for v in (box.left, box.top, box.right, box.bottom)))
        shape = predictor(image, rectangle)
        return np.array([(point.x, point.y) for point in shape.parts()], np.float32)


# --------------------------------------------------------------------------- #
# 2D-FAN (face-alignment): heatmap regression from a 256x256 crop.
# Preprocessing and decoding reimplement face_alignment/utils.py (crop,
# get_preds_fromhm, transform) and api.py (get_landmarks_from_image) of
# face-alignment 1.4.1 / 1.5.0, which agree on them (github.com/1adrianb/face-alignment).
# --------------------------------------------------------------------------- #

FAN_INPUT_SIZE = 256
FAN_HEATMAP_SIZE = 64
FAN_SCALE_FACTOR = 200.0   # face_alignment: a "scale" of 1 spans 200 pixels
FAN_CENTER_Y_OFFSET = 0.12  # face_alignment moves the box centre up by 12% of its height


def fan_center_scale(box: Box, reference_scale: float) -> tuple[np.ndarray, float]:
    """face_alignment's crop centre and scale for a detector box (``api.py``, get_landmarks_from_image)."""
    center = np.array([box.center[0], box.center[1] - box.height * FAN_CENTER_Y_OFFSET])
    return center, (box.width + box.height) / reference_scale


def fan_crop(image: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    """The uint8 [256,256,3] network input: face_alignment's ``utils.crop`` reimplemented.

    The square of side ``200 * scale`` around ``center`` is cut out with
    whole-pixel corners (truncated toward zero, as face_alignment's
    ``transform(..., invert=True).int()`` does), zero-padded where it leaves
    the image, and resized bilinearly to 256x256.
    """
    span = FAN_SCALE_FACTOR * scale
    # face_alignment maps crop points (1, 1) and (256, 256) back to the image.
    x0, y0 = (math.trunc(c + span / FAN_INPUT_SIZE - span / 2) for c in center)
    x1, y1 = (math.trunc(c + span / 2) for c in center)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"FAN crop is empty for centre {center} and scale {scale}")
    canvas = np.zeros((y1 - y0, x1 - x0, image.shape[2]), np.uint8)
    height, width = image.shape[:2]
    sx0, sx1, sy0, sy1 = max(x0, 0), min(x1, width), max(y0, 0), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(canvas, (FAN_INPUT_SIZE, FAN_INPUT_SIZE), interpolation=cv2.INTER_LINEAR)


def decode_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """float32 [N,2] (x, y) heatmap coordinates of N [H,W] heatmaps' peaks.

    face_alignment's ``utils.get_preds_fromhm``: the argmax cell, moved a
    quarter cell toward the higher of its two neighbours along each axis
    (not on the border), in a frame where cell (i, j) has its centre at
    (j + 0.5, i + 0.5).
    """
    count, height, width = heatmaps.shape
    flat = heatmaps.reshape(count, height * width).argmax(axis=1)
    rows, cols = np.divmod(flat, width)
    points = np.stack([cols, rows], axis=1).astype(np.float32) + 0.5
    inside = (cols > 0) & (cols < width - 1) & (rows > 0) & (rows < height - 1)
    k, r, c = np.arange(count)[inside], rows[inside], cols[inside]
    points[inside, 0] += 0.25 * np.sign(heatmaps[k, r, c + 1] - heatmaps[k, r, c - 1])
    points[inside, 1] += 0.25 * np.sign(heatmaps[k, r + 1, c] - heatmaps[k, r - 1, c])
    return points


def heatmap_to_image(points: np.ndarray, center: np.ndarray, scale: float,
                     resolution: int = FAN_HEATMAP_SIZE) -> np.ndarray:
    """Maps heatmap coordinates back to image pixels: face_alignment's ``transform(..., invert=True)``.

    face_alignment truncates the result to whole pixels; this keeps the
    fraction (so results differ from face_alignment's by less than 1 px).
    """
    span = FAN_SCALE_FACTOR * scale
    return (points * (span / resolution) + center - span / 2).astype(np.float32)


class FanLandmarks:
    """2D-FAN (2DFAN4, the face-alignment package's 2D model) from a local TorchScript file.

    Nothing is downloaded: ``landmark_weights`` is the TorchScript archive that
    face-alignment 1.4 fetches, e.g. ``2DFAN4-cd938726ad.zip`` or
    ``2DFAN4_1.6-c827573f02.zip`` (``~/.cache/torch/hub/checkpoints/``).
    face-alignment >= 1.5 fetches a plain state dict (``2DFAN4-11f355bf06.pth.tar``)
    instead, which needs its model code; that file is refused with a message.
    Preprocessing and decoding reproduce face-alignment's ``utils.py`` (crop,
    ``get_preds_fromhm``, ``transform``) without the optional flipped second
    pass. torch is imported on first use, and the network loads then.

    Args:
      landmark_weights: path to the TorchScript archive.
      face_detector: finds the face box; by default a ``DlibLandmarks`` (HOG),
        which, like face-alignment's own dlib detector, uses reference scale 195.
      device: torch device for the network.
      reference_scale: face-alignment's box-size normaliser: 195 for dlib and
        S3FD boxes, 165 for RetinaFace, SCRFD and YuNet boxes.
    """

    name = "fan"

    def __init__(self, landmark_weights: str, face_detector: LandmarkDetector | None = None,
                 device: str = "cpu", reference_scale: float = 195.0):
        if importlib.util.find_spec("torch") is None:
            raise ModuleNotFoundError("the FAN landmark backend needs torch: pip install torch")
        if not pathlib.Path(landmark_weights).is_file():
            raise FileNotFoundError(f"FAN landmark weights not found: {landmark_weights}")
        if reference_scale <= 0:
            raise ValueError(f"reference_scale must be > 0, got {reference_scale}")
        self.landmark_weights = str(landmark_weights)
        self.face_detector = DlibLandmarks() if face_detector is None else face_detector
        self.device = device
        self.reference_scale = float(reference_scale)
        self._net: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_net": None}

    def _loaded(self) -> Any:
        if self._net is None:
            import torch

            try:
                net = torch.jit.load(self.landmark_weights, map_location=self.device)
            except RuntimeError as error:
                raise ValueError(
                    f"{self.landmark_weights} is not a TorchScript archive (face-alignment 1.4's "
                    "2DFAN4-*.zip); face-alignment >= 1.5's .pth.tar state dicts are not supported") from error
            self._net = net.eval()
        return self._net

    def detect_face(self, image: np.ndarray) -> Box | None:
        """Delegates to ``face_detector``."""
        return self.face_detector.detect_face(image)

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        """FAN's 68 points for the face in ``box``, in image pixels."""
        import torch

        image = check_image(image)
        center, scale = fan_center_scale(box, self.reference_scale)
        crop = fan_crop(image, center, scale)
        inputs = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(self.device)
        with torch.inference_mode():
            outputs = self._loaded()(inputs)
        if isinstance(outputs, (list, tuple)):  # stacked-hourglass variants return every stack's output
            outputs = outputs[-1]
        heatmaps = outputs.detach().to("cpu", torch.float32).numpy()
        expected = (1, NUM_LANDMARKS, FAN_HEATMAP_SIZE, FAN_HEATMAP_SIZE)
        if heatmaps.shape != expected:
            raise ValueError(f"{self.landmark_weights} returned heatmaps of shape {heatmaps.shape}, "
                             f"expected {expected}")
        return heatmap_to_image(decode_heatmaps(heatmaps[0]), center, scale)


BACKENDS = {"dlib": DlibLandmarks, "fan": FanLandmarks}


def make_detector(name: str, **options: Any) -> LandmarkDetector:
    """The backend called ``name`` ('dlib' or 'fan'), built with ``options`` as keyword arguments."""
    if name not in BACKENDS:
        raise ValueError(f"unknown landmark backend {name!r}; known: {sorted(BACKENDS)}")
    return BACKENDS[name](**options)
