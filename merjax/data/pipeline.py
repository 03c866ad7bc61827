"""Input pipeline: prepared TFDS dataset → in-memory clips → grain → dict batches.

Clips are read once through ``tfds.data_source`` (array_record, no TensorFlow),
resized once to the model's input size and kept in memory: micro-expression
databases are small (SMIC-HS: 164 clips) and every fold and epoch reuses them.
Training samples are (clip, first frame) pairs — windows of N consecutive
frames (seed 001's sliding windows) or single frames (Exp-I) — shuffled,
augmented and batched by grain with a seed derived from (seed, epoch), so the
batches of an epoch do not depend on whether the run was resumed.

Batches are dicts of numpy arrays; ``merjax.train.sharding.shard_batch`` places
them on the device mesh. In a multi-process run each process loads only its
rows of every global batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from typing import Any, Callable, Iterator, Mapping, Sequence

import cv2
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from merjax.data import augment, clips, schema
from merjax.errors import UserError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class ClipSet:
    """Every clip of one split of a prepared dataset (or several), decoded, in memory.

    ``streams`` holds the per-clip arrays by name: ``frames`` ([T,H,W,3] uint8,
    the face crops as loaded and resized) and whatever clip operations add (e.g.
    ``region_mouth`` [T,h,w,3], ``dynamic_image`` [H,W,3]) or a frozen-prefix
    cache adds (``features`` [T,...]). A stream with a time axis has it first.
    ``variants`` optionally holds K precomputed versions of a stream per clip
    ([K,...], version 0 = the stream itself): a training sample draws one.
    """

    name: str
    class_names: tuple[str, ...]
    streams: Mapping[str, list[np.ndarray]]
    landmarks: list[np.ndarray]     # each [T,68,2] float32, in pixels of the ``frames`` stream
    labels: np.ndarray              # [num_clips] int32
    subjects: np.ndarray            # [num_clips] str
    clip_ids: np.ndarray            # [num_clips] str
    fps: np.ndarray                 # [num_clips] float32
    apexes: np.ndarray              # [num_clips] int32 apex frame index, -1 where unknown
    datasets: np.ndarray            # [num_clips] str, the database each clip comes from
    action_units: np.ndarray | None = None       # [num_clips] str, the database's AU string, '' where unknown
    objective_classes: np.ndarray | None = None  # [num_clips] int32, 0..6 = objective class I..VII, -1 unknown
    variants: Mapping[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.labels)
        if self.action_units is None:
            object.__setattr__(self, "action_units", np.full(count, "", dtype=object).astype(str))
        if self.objective_classes is None:
            object.__setattr__(self, "objective_classes", np.full(count, -1, np.int32))
        for stream, arrays in self.streams.items():
            if len(arrays) != count:
                raise ValueError(f"stream {stream!r} has {len(arrays)} clips, the clip set {count}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def frames(self) -> list[np.ndarray]:
        """The ``frames`` stream: [T,H,W,3] uint8 face crops per clip."""
        return self.streams["frames"]

    @property
    def lengths(self) -> np.ndarray:
        """Frames per clip (the time axis of the landmarks, which every time-axis stream shares)."""
        return np.asarray([len(points) for points in self.landmarks], np.int64)

    def with_streams(self, streams: Mapping[str, list[np.ndarray]],
                     variants: Mapping[str, list[np.ndarray]] | None = None) -> "ClipSet":
        """The same clips with other streams (and variants)."""
        return dataclasses.replace(self, streams=dict(streams), variants=dict(variants or {}))


INFO_FILE = "dataset_info.json"
CLASS_NAMES_FILE = "label.labels.txt"   # TFDS keeps the names of ClassLabel feature 'label' in '<feature>.labels.txt'


def prepared_copy_rebuild_command(dataset_dir: str) -> str:
    """The ``datasets.build`` command that rebuilds the prepared copy at ``<data_dir>/<name>/<config>/<version>``.

    The name and data_dir come from the folder's place; a copy built from a
    database adds the ``--manual_dir`` its ``metadata.json`` records (face
    options left at their defaults).
    """
    path = os.path.abspath(dataset_dir)
    config_dir = os.path.dirname(path)
    name = f"{os.path.basename(os.path.dirname(config_dir))}/{os.path.basename(config_dir)}"
    data_dir = os.path.dirname(os.path.dirname(config_dir))
    command = f"python -m datasets.build {name} --data_dir={shlex.quote(data_dir)}"
    try:
        with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
            manual_dir = json.load(f).get("manual_dir")
    except (OSError, ValueError, AttributeError):
        manual_dir = None
    if manual_dir:
        command += f" --manual_dir={shlex.quote(manual_dir)}"
    return f"{command} --overwrite"


def _first_line(error: BaseException) -> str:
    """``Type: message`` of another library's error, cut to its first line (messages here are one line)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def open_prepared(dataset_dir: str, rebuild_command: str | None = None) -> tfds.core.DatasetBuilder:
    """Opens a prepared dataset directory (the versioned folder holding dataset_info.json).

    Raises:
      UserError: naming the folder or file when the copy is missing or damaged
        (no or an unreadable ``dataset_info.json``, no ``label.labels.txt``
        with the class names), with the command that rebuilds it
        (``rebuild_command``, default ``prepared_copy_rebuild_command``).
    """
    if not os.path.isdir(dataset_dir):
        raise UserError(f"no prepared dataset at {dataset_dir} (no such folder); build it with "
                        f"{rebuild_command or 'python -m datasets.build NAME/CONFIG --data_dir=DIR'}, which prints the "
                        f"folder to pass")
    rebuild = rebuild_command or prepared_copy_rebuild_command(dataset_dir)
    info_file = os.path.join(dataset_dir, INFO_FILE)
    if not os.path.isfile(info_file):
        raise UserError(f"the prepared dataset at {dataset_dir} is incomplete (no {INFO_FILE}: a build cut "
                        f"short?); rebuild it: {rebuild}")
    try:
        with open(info_file, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"{info_file} is unreadable ({error}): the prepared copy is damaged; "
                        f"rebuild it: {rebuild}") from None
    try:
        builder = tfds.builder_from_directory(dataset_dir)
    except Exception as error:  # noqa: BLE001 - re-raised naming the folder and the fix
        raise UserError(f"the prepared dataset at {dataset_dir} cannot be opened ({_first_line(error)}); "
                        f"rebuild it: {rebuild}") from error
    names_file = os.path.join(dataset_dir, CLASS_NAMES_FILE)
    has_class_label = "label" in builder.info.features and isinstance(builder.info.features["label"],
                                                                      tfds.features.ClassLabel)
    if has_class_label and not os.path.isfile(names_file):
        raise UserError(f"{names_file} is missing: the prepared copy lost its class names (TFDS would call them "
                        f"'0', '1', ...); rebuild it: {rebuild}")
    return builder


def resize_clip(frames: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes square crops to ``size``×``size`` (area interpolation) and scales landmarks."""
    height, width = frames.shape[1:3]
    if (height, width) == (size, size):
        return frames, landmarks
    interpolation = cv2.INTER_AREA if size < min(height, width) else cv2.INTER_LINEAR
    resized = np.stack([cv2.resize(frame, (size, size), interpolation=interpolation) for frame in frames])
    scale = np.asarray([size / width, size / height], np.float32)
    return resized, (landmarks * scale).astype(np.float32)


def load_clips(dataset_dir: str, image_size: int, split: str = "train",
               progress: Callable[..., Any] = lambda it, **_: it) -> ClipSet:
    """Reads every clip of ``split`` once, validates it and resizes it to ``image_size``.

    Raises:
      UserError: naming the folder, file or record when the prepared copy is
        missing, damaged or has an unreadable record, with the command that
        rebuilds it (``open_prepared``).
    """
    builder = open_prepared(dataset_dir)
    if split not in builder.info.splits:
        raise KeyError(f"{dataset_dir!r} has no split {split!r}; it has {list(builder.info.splits)}")
    try:
        source = builder.as_data_source(split=split)
    except Exception as error:  # noqa: BLE001 - a damaged record file is named with the fix
        raise UserError(f"the records of split {split!r} in {dataset_dir} cannot be opened ({_first_line(error)}); "
                        f"rebuild it: {prepared_copy_rebuild_command(dataset_dir)}") from error
    frames, landmarks, labels, subjects, clip_ids, fps, apexes, datasets = [], [], [], [], [], [], [], []
    for index in progress(range(len(source)), desc=f"loading {builder.info.full_name}", leave=False):
        try:
            example = source[index]
        except Exception as error:  # noqa: BLE001 - a corrupt record is named, never skipped
            raise UserError(f"{dataset_dir}: record {index} of split {split!r} is unreadable ({_first_line(error)}); "
                            f"rebuild it: {prepared_copy_rebuild_command(dataset_dir)}") from error
        where = f"{dataset_dir}: record {index} (clip {schema.decode_text(example['clip'])!r})"
        try:
            schema.validate(example, where=where)
        except ValueError as error:   # written by another version of a builder, or damaged
            raise UserError(f"{error}; rebuild it: {prepared_copy_rebuild_command(dataset_dir)}") from error
        clip_frames, clip_landmarks = resize_clip(example["frames"], example["landmarks"], image_size)
        frames.append(clip_frames)
        landmarks.append(clip_landmarks)
        labels.append(int(example["label"]))
        subjects.append(schema.decode_text(example["subject"]))
        clip_ids.append(schema.decode_text(example["clip"]))
        fps.append(float(example["fps"]))
        apexes.append(int(example["apex"]))
        datasets.append(schema.decode_text(example["dataset"]))
    return ClipSet(
        name=builder.info.full_name,
        class_names=tuple(builder.info.features["label"].names),
        streams={"frames": frames},
        landmarks=landmarks,
        labels=np.asarray(labels, np.int32),
        subjects=np.asarray(subjects),
        clip_ids=np.asarray(clip_ids),
        fps=np.asarray(fps, np.float32),
        apexes=np.asarray(apexes, np.int32),
        datasets=np.asarray(datasets),
    )


def concat_clip_sets(clip_sets: Sequence[ClipSet]) -> ClipSet:
    """One ClipSet of several prepared datasets (cross-database protocols); class sets must agree.

    Raises:
      ValueError: naming the datasets whose class names differ.
    """
    first = clip_sets[0]
    for other in clip_sets[1:]:
        if other.class_names != first.class_names:
            raise ValueError(f"cannot combine {first.name} (classes {first.class_names}) with {other.name} "
                             f"(classes {other.class_names}): build both with the same class set")
    return ClipSet(
        name="+".join(clip_set.name for clip_set in clip_sets),
        class_names=first.class_names,
        streams={stream: [clip for clip_set in clip_sets for clip in clip_set.streams[stream]]
                 for stream in first.streams},
        landmarks=[clip for clip_set in clip_sets for clip in clip_set.landmarks],
        **{field: np.concatenate([getattr(clip_set, field) for clip_set in clip_sets])
           for field in ("labels", "subjects", "clip_ids", "fps", "apexes", "datasets", "action_units",
                         "objective_classes")},
    )


# --------------------------------------------------------------------------- #
# Training samples.
# --------------------------------------------------------------------------- #

def window_samples(clip_set: ClipSet, clip_indices: np.ndarray, size: int, stride: int,
                   pad_short: bool) -> np.ndarray:
    """Every sliding window of the given clips as rows (clip index, first frame) [n,2]."""
    rows = []
    for clip in clip_indices:
        try:
            indices, _ = clips.windows_with_mask(int(clip_set.lengths[clip]), size, stride, pad_short=pad_short)
        except ValueError as error:
            raise ValueError(f"clip {str(clip_set.clip_ids[clip])!r}: {error}") from error
        rows.extend((int(clip), int(start)) for start in indices[:, 0])
    return np.asarray(rows, np.int64).reshape(-1, 2)


def frame_samples(clip_set: ClipSet, clip_indices: np.ndarray) -> np.ndarray:
    """Every frame of the given clips as rows (clip index, frame) [n,2] — Exp-I's samples."""
    rows = [(int(c), t) for c in clip_indices for t in range(int(clip_set.lengths[c]))]
    return np.asarray(rows, np.int64).reshape(-1, 2)


def sample_labels(clip_set: ClipSet, samples: np.ndarray) -> np.ndarray:
    return clip_set.labels[samples[:, 0]]


def window_indices(length: int, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and mask of a window; steps past the clip's end repeat its last frame, masked."""
    steps = start + np.arange(size)
    return np.minimum(steps, length - 1), steps < length


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Clip-consistent random flip and small rotation (seed 001 §4.2)."""

    flip_prob: float = 0.5
    max_rotation: float = 10.0

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.flip_prob <= 0 and self.max_rotation <= 0:
            return frames
        frames, _ = augment.random_flip_rotate(frames, rng, max_angle=self.max_rotation, flip_prob=self.flip_prob)
        return frames


class SampleLoader:
    """Turns one (clip, start) row into an example dict; a grain random map.

    With ``class_weights`` each example carries ``sample_weight`` =
    class_weights[label], which the loss uses (weighted cross-entropy). With
    ``variants`` (per clip [K,T,...], e.g. cached prefix features of K augmented
    versions) each example reads one version drawn at random instead of
    ``clip_set.frames``.
    """

    def __init__(self, clip_set: ClipSet, window_size: int | None, augmentation: Augmentation | None,
                 class_weights: np.ndarray | None = None, variants: list[np.ndarray] | None = None):
        if variants is not None and augmentation is not None:
            raise ValueError("precomputed variants replace augmentation; pass one or the other")
        self._clip_set = clip_set
        self._window_size = window_size
        self._augmentation = augmentation
        self._class_weights = class_weights
        self._variants = variants

    def __call__(self, row: np.ndarray, rng: np.random.Generator) -> Batch:
        example = self._load(row, rng)
        if self._class_weights is not None:
            example["sample_weight"] = np.float32(self._class_weights[example["label"]])
        return example

    def _clip_frames(self, clip: int, rng: np.random.Generator) -> np.ndarray:
        if self._variants is None:
            return self._clip_set.frames[clip]
        versions = self._variants[clip]
        return versions[rng.integers(len(versions))]

    def _load(self, row: np.ndarray, rng: np.random.Generator) -> Batch:
        clip, start = int(row[0]), int(row[1])
        frames = self._clip_frames(clip, rng)
        label = np.int32(self._clip_set.labels[clip])
        if self._window_size is None:
            image = np.asarray(frames[start])
            if self._augmentation is not None:
                image = self._augmentation(image[None], rng)[0]
            return {"frames": image, "label": label}
        indices, mask = window_indices(len(frames), start, self._window_size)
        window = frames[indices]
        if self._augmentation is not None:
            window = self._augmentation(window, rng)
        return {"frames": window, "mask": mask, "label": label}


def stack(examples: list[Batch]) -> Batch:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def local_rows(global_batch_size: int) -> range:
    """The rows of every global batch that this process loads."""
    per_process = global_batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return range(start, start + per_process)


def train_batches(clip_set: ClipSet, samples: np.ndarray, *, batch_size: int, seed: int, epoch: int,
                  window_size: int | None, augmentation: Augmentation | None,
                  class_weights: np.ndarray | None = None, variants: list[np.ndarray] | None = None,
                  num_threads: int = 2) -> grain.IterDataset:
    """One epoch of shuffled, augmented training batches (the last partial batch is dropped).

    Args:
      samples: rows (clip index, first frame) from ``window_samples`` or ``frame_samples``.
      batch_size: the global batch size.
      window_size: frames per window, or None for single-frame samples.
      class_weights: optional [C] weights, put in each example's ``sample_weight``.
      variants: optional per-clip versions [K,T,...] to draw from (see ``SampleLoader``).
    """
    if len(samples) < batch_size:
        raise ValueError(f"only {len(samples)} training samples for a batch of {batch_size}")
    loaded = (grain.MapDataset.source(samples)
              .shuffle(seed=epoch_seed(seed, epoch))
              .random_map(SampleLoader(clip_set, window_size, augmentation, class_weights, variants),
                          seed=epoch_seed(seed + 1, epoch)))
    rows = local_rows(batch_size)
    batches = grain.MapDataset.range(len(samples) // batch_size).map(
        lambda b: stack([loaded[b * batch_size + r] for r in rows]))
    return batches.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4))


# --------------------------------------------------------------------------- #
# Evaluation batches: whole clips.
# --------------------------------------------------------------------------- #

def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def clip_eval_batches(clip_set: ClipSet, clip_indices: np.ndarray, *, batch_size: int, window_size: int,
                      stride: int, pad_short: bool, max_length: int) -> Iterator[tuple[Batch, np.ndarray]]:
    """Whole clips padded to ``max_length`` frames with every sliding window of each.

    Yields (this process's rows of the global batch, the global batch's clip
    indices); padding slots have index -1 and sample_weight 0.
    The model encodes each frame once and classifies every window; the clip's
    prediction is the mean of its windows' log-probabilities.
    """
    num_windows = len(clips.windows_with_mask(max_length, window_size, stride, pad_short=pad_short)[0])
    rows = list(local_rows(batch_size))
    for begin in range(0, len(clip_indices), batch_size):
        chunk = list(clip_indices[begin:begin + batch_size])
        indices = np.full(batch_size, -1, np.int64)
        indices[:len(chunk)] = chunk
        example_frames = clip_set.frames[int(clip_indices[0])]
        batch = {
            "frames": np.zeros((batch_size, max_length, *example_frames.shape[1:]), example_frames.dtype),
            "mask": np.zeros((batch_size, max_length), bool),
            "windows": np.zeros((batch_size, num_windows, window_size), np.int32),
            "window_mask": np.zeros((batch_size, num_windows), bool),
            "label": np.zeros(batch_size, np.int32),
            "sample_weight": np.zeros(batch_size, np.float32),
        }
        for slot, clip in enumerate(chunk):
            frames = clip_set.frames[int(clip)]
            if len(frames) > max_length:
                raise ValueError(f"clip {str(clip_set.clip_ids[clip])!r} has {len(frames)} frames > max_length {max_length}")
            windows, _ = clips.windows_with_mask(len(frames), window_size, stride, pad_short=pad_short)
            batch["frames"][slot, :len(frames)] = frames
            batch["mask"][slot, :len(frames)] = True
            batch["windows"][slot, :len(windows)] = windows
            batch["window_mask"][slot, :len(windows)] = True
            batch["label"][slot] = clip_set.labels[clip]
            batch["sample_weight"][slot] = 1.0
        yield {k: v[rows] for k, v in batch.items()}, indices


def frame_eval_batches(clip_set: ClipSet, clip_indices: np.ndarray, *,
                       batch_size: int) -> Iterator[tuple[Batch, np.ndarray]]:
    """Every frame of the clips as single-frame samples.

    Yields (this process's rows of the global batch, the clip index of every
    frame of the global batch, -1 for padding).
    """
    samples = frame_samples(clip_set, clip_indices)
    rows = list(local_rows(batch_size))
    for begin in range(0, len(samples), batch_size):
        chunk = samples[begin:begin + batch_size]
        indices = np.full(batch_size, -1, np.int64)
        indices[:len(chunk)] = chunk[:, 0]
        first = clip_set.frames[int(chunk[0, 0])]
        batch = {
            "frames": np.zeros((batch_size, *first.shape[1:]), first.dtype),
            "label": np.zeros(batch_size, np.int32),
            "sample_weight": np.zeros(batch_size, np.float32),
        }
        for slot, (clip, frame) in enumerate(chunk):
            batch["frames"][slot] = clip_set.frames[int(clip)][int(frame)]
            batch["label"][slot] = clip_set.labels[clip]
            batch["sample_weight"][slot] = 1.0
        yield {k: v[rows] for k, v in batch.items()}, indices


def eval_length(clip_set: ClipSet, multiple: int = 8) -> int:
    """One padded clip length for the whole dataset, so evaluation compiles once."""
    return _round_up(int(clip_set.lengths.max()), multiple)
