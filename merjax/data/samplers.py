"""Samplers: which samples a fold trains and evaluates on, how one is loaded, how a clip's prediction forms.

A sampler turns clips into model inputs; the engine never asks what kind of
model or sampler it runs. Every sampler provides

* ``train_rows(clip_set, clips)``: the training samples as rows (clip, start)
  [n,2] (start -1: drawn at load, e.g. a random window redrawn every epoch);
* ``load_train(clip_set, row, rng)``: one sample's model inputs;
* ``eval_rows(clip_set, clips)`` and ``load_eval(clip_set, row)``: the evaluation
  samples, with the validity mask of each sample's predictions (one per sample,
  or one per window when a clip is scored by several windows at once);
* ``sample_level``: the name of a sample smaller than a clip whose own metrics
  are reported (``'frame'`` for single frames), else None.

A clip's prediction is the mean of the log-probabilities of its evaluation
samples (and, within a sample, of its valid windows).

The samplers here:

* ``frames``: every frame is a sample (seed 001 Exp-I); a test clip averages its frames.
* ``sliding_windows``: every window of N consecutive frames (seed 001 Exp-II/III);
  a test clip is encoded once and every window classified from the shared
  per-frame encoding (the model takes ``windows``).
* ``random_window``: one window of N consecutive frames per clip, drawn anew
  every epoch (seed 004: 16 random consecutive frames); evaluated as ``sliding_windows``.
* ``whole_clip``: the clip padded to the dataset's longest and masked (TIM'd clips, LSTM heads).
* ``clip_image``: one precomputed image per clip (seed 003's dynamic images).

Inputs are read from the clip set's ``streams`` named in ``streams`` (e.g.
``('frames',)`` or seed 002's six region crops), all with the same frame
indices; time-axis samplers add ``mask`` [N] (True on real frames).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from merjax.data import clips
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError

Inputs = dict[str, np.ndarray]
Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def eval_length(clip_set: ClipSet, multiple: int = 8) -> int:
    """One padded clip length for the whole clip set, so that evaluation (and whole-clip training) compiles once."""
    return round_up(int(clip_set.lengths.max()), multiple)


def window_indices(length: int, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and mask of a window; steps past the clip's end repeat its last frame, masked."""
    steps = start + np.arange(size)
    return np.minimum(steps, length - 1), steps < length


@dataclasses.dataclass(frozen=True)
class Sampler:
    """What every sampler shares: the streams it reads, optional augmentation and precomputed variants.

    ``augment(streams, rng)`` (training only) receives every stream of one
    sample at once, so that one flip/rotation serves them all; a stream with
    ``variants`` in the clip set is instead read from a version drawn at random.
    """

    streams: tuple[str, ...] = ("frames",)
    augment: Augment | None = None

    # The name of a sample smaller than a clip whose own metrics are reported ('frame'), or None.
    sample_level: ClassVar[str | None] = None

    def reading(self, streams: tuple[str, ...], augment: Augment | None) -> "Sampler":
        """This sampler reading other streams (e.g. cached prefix features) with other augmentation."""
        return dataclasses.replace(self, streams=tuple(streams), augment=augment)

    def describe(self, clip_set: ClipSet, clip_indices: np.ndarray) -> dict[str, Any]:
        """Facts about the training samples of ``clip_indices`` worth recording (e.g. clips padded)."""
        return {}

    def check(self, clip_set: ClipSet) -> None:
        """Refuses a clip set without the streams this sampler reads, naming the config keys that make them."""
        missing = [stream for stream in self.streams if stream not in clip_set.streams]
        if missing:
            raise UserError(f"the sampler reads stream(s) {missing} but {clip_set.name} has {sorted(clip_set.streams)}: "
                            f"set --config.sampler.streams or add the clip operation that makes them "
                            f"(--config.data.clip_ops)")

    def _stream(self, clip_set: ClipSet, stream: str, clip: int, rng: np.random.Generator | None) -> np.ndarray:
        versions = clip_set.variants.get(stream)
        if versions is None or rng is None:
            return clip_set.streams[stream][clip]
        clip_versions = versions[clip]
        return clip_versions[rng.integers(len(clip_versions))]

    def _read(self, clip_set: ClipSet, clip: int, index: Any, rng: np.random.Generator | None) -> Inputs:
        """``stream[index]`` of every stream; augmented when training (rng given) and the sampler augments."""
        inputs = {stream: np.asarray(self._stream(clip_set, stream, clip, rng)[index]) for stream in self.streams}
        if rng is not None and self.augment is not None:
            inputs = self.augment(inputs, rng)
        return inputs

    def train_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        """The training samples of ``clip_indices`` as rows (clip, start) [n,2]; start -1: drawn at load."""
        raise NotImplementedError

    def load_train(self, clip_set: ClipSet, row: np.ndarray, rng: np.random.Generator) -> Inputs:
        """One training sample's model inputs, augmented with ``rng``."""
        raise NotImplementedError

    def eval_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        """The evaluation samples of ``clip_indices`` as rows (clip, start) [n,2]."""
        raise NotImplementedError

    def load_eval(self, clip_set: ClipSet, row: np.ndarray) -> tuple[Inputs, np.ndarray]:
        """One evaluation sample's model inputs and the validity of its predictions ([] or [W] windows)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Frames(Sampler):
    """Single frames (seed 001 Exp-I): every frame of a training clip is a sample; a test clip averages its frames."""

    sample_level = "frame"

    def train_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        rows = [(int(c), t) for c in clip_indices for t in range(int(clip_set.lengths[c]))]
        return np.asarray(rows, np.int64).reshape(-1, 2)

    def load_train(self, clip_set: ClipSet, row: np.ndarray, rng: np.random.Generator) -> Inputs:
        return self._read(clip_set, int(row[0]), int(row[1]), rng)

    def eval_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        return self.train_rows(clip_set, clip_indices)

    def load_eval(self, clip_set: ClipSet, row: np.ndarray) -> tuple[Inputs, np.ndarray]:
        return self._read(clip_set, int(row[0]), int(row[1]), None), np.asarray(True)


@dataclasses.dataclass(frozen=True)
class SlidingWindows(Sampler):
    """Every window of ``window`` consecutive frames (seed 001 Exp-II/III).

    Training: every window at ``train_stride`` is a sample. Evaluation: the whole
    clip, padded to the clip set's longest, with the frame indices of every window
    at ``eval_stride`` (``windows`` [W,N]); the model encodes each frame once and
    classifies every window from the shared encoding. A clip shorter than the
    window gives one padded, masked window when ``pad_short``; otherwise it is refused.
    """

    window: int = 13
    train_stride: int = 1
    eval_stride: int = 2
    pad_short: bool = True

    def _starts(self, clip_set: ClipSet, clip: int, stride: int) -> np.ndarray:
        try:
            indices, _ = clips.windows_with_mask(int(clip_set.lengths[clip]), self.window, stride,
                                                 pad_short=self.pad_short)
        except ValueError as error:
            raise UserError(f"clip {str(clip_set.clip_ids[clip])!r}: {error} (--config.sampler.window="
                            f"{self.window}; set --config.sampler.pad_short=True to pad it)") from error
        return indices[:, 0]

    def describe(self, clip_set: ClipSet, clip_indices: np.ndarray) -> dict[str, Any]:
        return {"padded_short_clips": int(np.sum(clip_set.lengths[clip_indices] < self.window))}

    def train_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        rows = [(int(c), int(s)) for c in clip_indices for s in self._starts(clip_set, int(c), self.train_stride)]
        return np.asarray(rows, np.int64).reshape(-1, 2)

    def _window(self, clip_set: ClipSet, clip: int, start: int, rng: np.random.Generator | None) -> Inputs:
        indices, mask = window_indices(int(clip_set.lengths[clip]), start, self.window)
        return {**self._read(clip_set, clip, indices, rng), "mask": mask}

    def load_train(self, clip_set: ClipSet, row: np.ndarray, rng: np.random.Generator) -> Inputs:
        return self._window(clip_set, int(row[0]), int(row[1]), rng)

    def eval_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(clip_indices, np.int64), np.zeros(len(clip_indices), np.int64)], axis=1)

    def load_eval(self, clip_set: ClipSet, row: np.ndarray) -> tuple[Inputs, np.ndarray]:
        clip, length, max_length = int(row[0]), int(clip_set.lengths[int(row[0])]), eval_length(clip_set)
        num_windows = len(clips.windows_with_mask(max_length, self.window, self.eval_stride,
                                                  pad_short=self.pad_short)[0])
        windows, _ = clips.windows_with_mask(length, self.window, self.eval_stride, pad_short=self.pad_short)
        inputs = {stream: _pad_time(np.asarray(self._stream(clip_set, stream, clip, None)), max_length)
                  for stream in self.streams}
        inputs["mask"] = np.arange(max_length) < length
        inputs["windows"] = np.zeros((num_windows, self.window), np.int32)
        inputs["windows"][:len(windows)] = windows
        return inputs, np.arange(num_windows) < len(windows)


@dataclasses.dataclass(frozen=True)
class RandomWindow(SlidingWindows):
    """One window of ``window`` consecutive frames per training clip, its start drawn anew every epoch
    (seed 004: 16 random consecutive frames); evaluated as ``sliding_windows``."""

    def train_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        for clip in clip_indices:
            self._starts(clip_set, int(clip), 1)   # refuses a clip too short for the window (without pad_short)
        return np.stack([np.asarray(clip_indices, np.int64), np.full(len(clip_indices), -1, np.int64)], axis=1)

    def load_train(self, clip_set: ClipSet, row: np.ndarray, rng: np.random.Generator) -> Inputs:
        clip = int(row[0])
        last_start = max(int(clip_set.lengths[clip]) - self.window, 0)
        return self._window(clip_set, clip, int(rng.integers(last_start + 1)), rng)


@dataclasses.dataclass(frozen=True)
class WholeClip(Sampler):
    """The whole clip, padded to the clip set's longest with ``mask`` True on real frames; one sample per clip."""

    def train_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(clip_indices, np.int64), np.zeros(len(clip_indices), np.int64)], axis=1)

    def _clip(self, clip_set: ClipSet, clip: int, rng: np.random.Generator | None) -> Inputs:
        length, max_length = int(clip_set.lengths[clip]), eval_length(clip_set)
        inputs = {stream: _pad_time(array, max_length)
                  for stream, array in self._read(clip_set, clip, slice(None), rng).items()}
        return {**inputs, "mask": np.arange(max_length) < length}

    def load_train(self, clip_set: ClipSet, row: np.ndarray, rng: np.random.Generator) -> Inputs:
        return self._clip(clip_set, int(row[0]), rng)

    eval_rows = train_rows

    def load_eval(self, clip_set: ClipSet, row: np.ndarray) -> tuple[Inputs, np.ndarray]:
        return self._clip(clip_set, int(row[0]), None), np.asarray(True)


@dataclasses.dataclass(frozen=True)
class ClipImage(Sampler):
    """One precomputed image per clip (a stream without a time axis, e.g. seed 003's ``dynamic_image``)."""

    streams: tuple[str, ...] = ("dynamic_image",)

    def train_rows(self, clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(clip_indices, np.int64), np.zeros(len(clip_indices), np.int64)], axis=1)

    def load_train(self, clip_set: ClipSet, row: np.ndarray, rng: np.random.Generator) -> Inputs:
        return self._read(clip_set, int(row[0]), slice(None), rng)

    eval_rows = train_rows

    def load_eval(self, clip_set: ClipSet, row: np.ndarray) -> tuple[Inputs, np.ndarray]:
        return self._read(clip_set, int(row[0]), slice(None), None), np.asarray(True)


def _pad_time(array: np.ndarray, length: int) -> np.ndarray:
    """``array`` [T,...] padded at the end with zeros to [length,...]."""
    if len(array) > length:
        raise ValueError(f"a clip of {len(array)} frames does not fit the padded length {length}")
    padded = np.zeros((length, *array.shape[1:]), array.dtype)
    padded[:len(array)] = array
    return padded


SAMPLERS: Mapping[str, type[Sampler]] = {
    "frames": Frames,
    "sliding_windows": SlidingWindows,
    "random_window": RandomWindow,
    "whole_clip": WholeClip,
    "clip_image": ClipImage,
}


def create_sampler(config: Mapping[str, Any], augment: Augment | None = None) -> Sampler:
    """The sampler ``config.name`` with the config's fields it declares (e.g. window, strides, streams).

    Raises:
      UserError: for an unknown sampler name, naming ``--config.sampler.name`` and the choices.
    """
    name = config["name"]
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r} (--config.sampler.name); choose one of {tuple(SAMPLERS)}")
    cls = SAMPLERS[name]
    fields = {field.name for field in dataclasses.fields(cls)} - {"augment"}
    kwargs = {key: (tuple(value) if key == "streams" else value) for key, value in config.items() if key in fields}
    return cls(augment=augment, **kwargs)
