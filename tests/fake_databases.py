"""Small fake copies of the licensed databases, written with their real folder and file naming.

Frames show a rendered synthetic face (``datasets.synthetic_me.render``) that
dlib's detector finds, pasted into a larger canvas with a small drift per
frame, so builder tests run the real face pipeline. Quirks are put in on
purpose by the tests (gaps, stray files, a corrupt frame, a blank clip, ...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from datasets.core.builder import read_build_report
from datasets.synthetic_me import render
from merjax.data import schema

CANVAS = (120, 160)   # (height, width) of a raw frame
FACE_SIZE = 96        # dlib's HOG detector needs faces of about 80 px or more
FACE_ORIGIN = (12, 32)  # (top, left) of the face in the canvas at frame 0


@dataclasses.dataclass(frozen=True)
class FakeClip:
    """One clip to write: the subject index picks the rendered identity; numbers are the frame numbers."""

    subject_index: int
    numbers: Sequence[int]
    blank: bool = False          # no face in any frame
    faceless_first: int = 0      # the first frames show no face (a face found late)
    tight: bool = False          # frames cropped to the face's landmark box, like SMIC_all_cropped / Cropped


def face_frames(subject_index: int, num_frames: int, blank: bool = False,
                faceless_first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [T,H,W,3] frames of a subject's face drifting by <= 2 px, and its [T,68,2] landmarks (x, y)."""
    identity = render.sample_identity(np.random.default_rng([7, 0, subject_index]))
    face = np.clip(render.render_neutral(identity, FACE_SIZE), 0, 255).astype(np.uint8)
    rng = np.random.default_rng([7, 1, subject_index, num_frames])
    frames = np.full((num_frames, *CANVAS, 3), 90, np.uint8)
    landmarks = np.zeros((num_frames, 68, 2), np.float32)
    for t in range(num_frames):
        dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
        top, left = FACE_ORIGIN[0] + dy, FACE_ORIGIN[1] + dx
        if not blank and t >= faceless_first:
            frames[t, top:top + FACE_SIZE, left:left + FACE_SIZE] = face
        landmarks[t] = identity.control_points[:68] * FACE_SIZE + (left, top)
    return frames, landmarks


def tight_crop(frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """``frames`` cropped to the bounding box of ``landmarks`` [68,2] (a face with no context around it)."""
    (left, top), (right, bottom) = np.floor(landmarks.min(0)).astype(int), np.ceil(landmarks.max(0)).astype(int)
    return frames[:, top:bottom + 1, left:right + 1]


def write_frames(folder: Path, clip: FakeClip, name: str, grayscale: bool = False) -> list[Path]:
    """Writes the clip's frames as ``name.format(number)`` files in ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    frames, landmarks = face_frames(clip.subject_index, len(clip.numbers), clip.blank, clip.faceless_first)
    if clip.tight:
        frames = tight_crop(frames, landmarks[0])
    paths = []
    for frame, number in zip(frames, clip.numbers):
        path = folder / name.format(number)
        image = Image.fromarray(frame)
        (image.convert("L") if grayscale else image).save(path)
        paths.append(path)
    return paths


def corrupt(path: Path) -> None:
    """Truncates an image file so that it no longer decodes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def smic_clip_folder(root: Path, subject_folder: str, emotion: str, clip: str, cropped: bool = False,
                     modality: str = "HS") -> Path:
    """``root/[SMIC_all_cropped/]HS/s1/micro/negative/s1_ne_01`` (``emotion='non_micro'``: ``s1/non_micro/clip``)."""
    tree = root / "SMIC_all_cropped" / modality if cropped else root / modality
    if emotion == "non_micro":
        return tree / subject_folder / "non_micro" / clip
    return tree / subject_folder / "micro" / emotion / clip


def smic_frame_name(cropped: bool) -> str:
    return "reg_image{:06d}.bmp" if cropped else "image{:06d}.bmp"


def write_video(path: Path, subject_index: int, num_frames: int, fps: float = 25.0) -> int:
    """Writes a subject's drifting face as an MJPG ``.avi`` (OpenCV); returns the frames read back from it."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    frames, _ = face_frames(subject_index, num_frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (CANVAS[1], CANVAS[0]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    read = 0
    while capture.read()[0]:
        read += 1
    capture.release()
    return read


def read_examples(dataset_dir: str) -> dict[str, dict]:
    """The examples of a prepared dataset keyed by clip id."""
    source = tfds.builder_from_directory(dataset_dir).as_data_source(split="train")
    return {schema.decode_text(example["clip"]): example for example in source}


def quirk_counts(dataset_dir: str) -> dict[str, tuple[str, int]]:
    """``{kind: (action, count)}`` of a prepared dataset's build report."""
    return {kind: (entry["action"], entry["count"])
            for kind, entry in read_build_report(dataset_dir)["quirks"].items()}
