"""Clip ops on the host: sliding windows, padding with masks, fixed lengths, random windows.

Seed 001 cuts every clip into windows of N consecutive frames (N = 13; 11-17
tried) and seed 004 trains on a random 16 consecutive frames per clip. These
functions return frame *indices*, not frames, so that a clip's frames can be
encoded once and the windows gathered from the encoded sequence (DESIGN.md,
"Speed by design"). Clips shorter than a window are padded only when asked,
and the padded steps are masked; frames are never silently dropped.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def sliding_windows(length: int, size: int, stride: int = 1) -> np.ndarray:
    """Returns int32 [W, size] frame indices of windows of ``size`` consecutive frames.

    Windows start at 0, stride, 2*stride, ...; when the stride skips the tail
    of the clip, one more window is aligned to the clip's end, so every frame
    is in some window.

    Raises:
      ValueError: if ``size`` > ``length``, or any argument is < 1.
    """
    _check_window_arguments(length, size, stride)
    if size > length:
        raise ValueError(f"window of {size} frames is longer than the clip ({length} frames)")
    starts = np.arange(0, length - size + 1, stride)
    if starts[-1] != length - size:
        starts = np.append(starts, length - size)
    return (starts[:, None] + np.arange(size)[None, :]).astype(np.int32)


def count_windows(length: int, size: int, stride: int = 1, *, pad_short: bool = False) -> int:
    """Returns how many windows ``windows_with_mask`` yields, without building them."""
    _check_window_arguments(length, size, stride)
    if size > length:
        if pad_short:
            return 1
        raise ValueError(f"window of {size} frames is longer than the clip ({length} frames)")
    full_steps = (length - size) // stride
    return full_steps + 1 + int(full_steps * stride != length - size)


def windows_with_mask(
    length: int, size: int, stride: int = 1, *, pad_short: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Returns sliding-window indices int32 [W, size] and a bool mask [W, size] of valid steps.

    A clip at least ``size`` frames long gives ``sliding_windows`` and an
    all-True mask. A shorter clip raises unless ``pad_short``; then it gives
    one window: the clip's frames left-aligned, padded with the last frame's
    index, and the padded steps masked out (False).
    """
    if size <= length or not pad_short:
        indices = sliding_windows(length, size, stride)
        return indices, np.ones(indices.shape, bool)
    _check_window_arguments(length, size, stride)
    steps = np.arange(size)
    return np.minimum(steps, length - 1)[None, :].astype(np.int32), (steps < length)[None, :]


def pad_to_length(
    frames: np.ndarray, length: int, *, fill: Literal["edge", "zero"] = "edge"
) -> tuple[np.ndarray, np.ndarray]:
    """Pads ``frames`` [T, ...] along time to [length, ...]; returns it and a bool mask [length].

    ``fill='edge'`` repeats the last frame, ``'zero'`` pads with zeros; the
    mask is True for the T real frames.

    Raises:
      ValueError: if T > ``length`` (frames are never silently truncated) or T == 0.
    """
    frames = np.asarray(frames)
    num_frames = _num_frames(frames)
    if num_frames > length:
        raise ValueError(f"clip has {num_frames} frames, more than the padded length {length}")
    if fill not in ("edge", "zero"):
        raise ValueError(f"fill must be 'edge' or 'zero', got {fill!r}")
    pad_width = [(0, length - num_frames)] + [(0, 0)] * (frames.ndim - 1)
    padded = np.pad(frames, pad_width, mode="edge" if fill == "edge" else "constant")
    return padded, np.arange(length) < num_frames


def fixed_length(
    frames: np.ndarray, length: int, mode: Literal["pad", "sample"] = "pad"
) -> tuple[np.ndarray, np.ndarray]:
    """Brings ``frames`` [T, ...] to [length, ...]; returns the frames and a bool mask [length].

    ``mode='pad'``: ``pad_to_length`` (edge fill; raises if T > length).
    ``mode='sample'``: ``length`` frames picked at evenly spaced times over
    the clip (nearest frame, halves rounded up: frames repeat when T < length and are skipped
    when T > length); the mask is all True. For smooth resampling use
    temporal interpolation (TIM) instead.
    """
    frames = np.asarray(frames)
    if mode == "pad":
        return pad_to_length(frames, length)
    if mode == "sample":
        num_frames = _num_frames(frames)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        times = np.floor(np.linspace(0, num_frames - 1, length) + 0.5).astype(np.int64)
        return frames[times], np.ones(length, bool)
    raise ValueError(f"mode must be 'pad' or 'sample', got {mode!r}")


def random_window(length: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Returns int32 [size] indices of ``size`` consecutive frames at a uniformly random start (seed 004)."""
    _check_window_arguments(length, size, 1)
    if size > length:
        raise ValueError(f"window of {size} frames is longer than the clip ({length} frames)")
    start = int(rng.integers(0, length - size + 1))
    return np.arange(start, start + size, dtype=np.int32)


def _check_window_arguments(length: int, size: int, stride: int) -> None:
    for name, value in (("length", length), ("size", size), ("stride", stride)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _num_frames(frames: np.ndarray) -> int:
    if frames.ndim == 0 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [T, ...] with T >= 1, got shape {frames.shape}")
    return frames.shape[0]
