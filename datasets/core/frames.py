"""Frame folders of the real databases: list frames by their number, read them as RGB.

Frame files carry absolute frame numbers of the original recording
(``image559700.bmp``, ``reg_img46.jpg``, ``006_05562.jpg``), padded or not, and
folders hold stray files (``Desktop - Shortcut.lnk``, ``Thumbs.db``). Frames
are therefore matched by a pattern, ordered by the number it captures (never by
name or listing order), and gaps in the numbering are reported.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from datasets.core.quirks import QuirkLog

IGNORED_FILES = re.compile(r"^(\..*|thumbs\.db|desktop\.ini)$", re.IGNORECASE)
IMAGE_SUFFIX = r"\.(?:bmp|jpe?g|png|tiff?)"


def frame_pattern(prefix: str) -> re.Pattern[str]:
    """``prefix`` (a regex) then the frame number, then an image suffix, e.g. ``(?:reg_)?img``."""
    return re.compile(rf"^{prefix}(?P<number>\d+){IMAGE_SUFFIX}$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class FrameFile:
    number: int
    path: Path


def list_frames(folder: Path, pattern: re.Pattern[str], where: str, quirks: QuirkLog) -> list[FrameFile]:
    """The frames of ``folder`` in frame-number order; stray files, duplicates and gaps are logged.

    Files not matching ``pattern`` are left out and counted (``stray_file``;
    hidden files and Windows' Thumbs.db/desktop.ini silently). Two files with
    the same number (``img7.jpg`` and ``img07.jpg``) keep the first by name and
    count ``duplicate_frame_number``. Missing numbers between the first and the
    last frame count one ``frame_gap`` per clip (the present frames are kept in
    order; nothing is invented).
    """
    by_number: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if match is None or not path.is_file():
            if not IGNORED_FILES.match(path.name):
                quirks.skipped("stray_file", where, path.name)
            continue
        number = int(match.group("number"))
        if number in by_number:
            quirks.skipped("duplicate_frame_number", where, f"{path.name} repeats {by_number[number].name}")
            continue
        by_number[number] = path
    frames = [FrameFile(number, by_number[number]) for number in sorted(by_number)]
    if frames:
        missing = frames[-1].number - frames[0].number + 1 - len(frames)
        if missing:
            quirks.fixed("frame_gap", where, f"{missing} frame number(s) missing between "
                                             f"{frames[0].number} and {frames[-1].number}")
    return frames


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 [H,W,3] RGB (grayscale is repeated to 3 channels).

    Raises:
      ValueError: naming the file when it cannot be decoded (truncated, corrupt, not an image).
    """
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read frame {path}: {error}") from error


def read_clip(frames: Sequence[FrameFile], where: str, quirks: QuirkLog) -> tuple[np.ndarray, list[int]] | None:
    """Reads ``frames`` into uint8 [T,H,W,3]; returns it with the frame numbers that were read.

    An unreadable frame is left out (``corrupt_frame``, the clip keeps its other
    frames); a frame whose size differs from the first readable one skips the
    whole clip (``frame_size_mismatch``), as does a clip with no readable frame
    (``no_readable_frame``). Returns None when the clip is skipped.
    """
    images, numbers = [], []
    for frame in frames:
        try:
            image = read_rgb(frame.path)
        except ValueError as error:
            quirks.skipped("corrupt_frame", where, str(error))
            continue
        if images and image.shape != images[0].shape:
            quirks.skipped("frame_size_mismatch", where,
                           f"{frame.path.name} is {image.shape[:2]}, earlier frames {images[0].shape[:2]}")
            return None
        images.append(image)
        numbers.append(frame.number)
    if not images:
        quirks.skipped("no_readable_frame", where, f"{len(frames)} frame file(s), none readable")
        return None
    return np.stack(images), numbers
