"""Input pipeline, part 1: prepared TFDS dataset → in-memory clips (``ClipSet``).

Clips are read once through ``tfds.data_source`` (array_record, no TensorFlow),
resized once to the model's input size and kept in memory: micro-expression
databases are small (SMIC-HS: 164 clips) and every fold and epoch reuses them.
Samplers (``merjax.data.samplers``) then cut them into samples and
``merjax.data.batches`` makes the dict batches the train step takes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from merjax.data import clip_ops, schema
from merjax.errors import UserError

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

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Frames per clip (the time axis of the landmarks, which every time-axis stream shares); computed once,
        since samplers ask for it (and for the longest clip) for every sample."""
        return np.asarray([len(points) for points in self.landmarks], np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ClipSet":
        """The clips at ``indices``, in that order (every stream, variant and per-clip field)."""
        indices = np.asarray(indices, np.int64)
        per_clip = {field: getattr(self, field)[indices] for field in (
            "labels", "subjects", "clip_ids", "fps", "apexes", "datasets", "action_units", "objective_classes")}
        return dataclasses.replace(
            self, streams={name: [arrays[i] for i in indices] for name, arrays in self.streams.items()},
            variants={name: [arrays[i] for i in indices] for name, arrays in self.variants.items()},
            landmarks=[self.landmarks[i] for i in indices], **per_clip)

    def with_streams(self, streams: Mapping[str, list[np.ndarray]],
                     variants: Mapping[str, list[np.ndarray]] | None = None) -> "ClipSet":
        """The same clips with other streams (and variants)."""
        return dataclasses.replace(self, streams=dict(streams), variants=dict(variants or {}))


INFO_FILE = "dataset_info.json"
CLASS_NAMES_FILE = "label.labels.txt"   # TFDS keeps the names of ClassLabel feature 'label' in '<feature>.labels.txt'


def prepared_copy_rebuild_command(dataset_dir: str) -> str:
    """The ``datasets.build`` command that rebuilds the prepared copy at ``<data_dir>/<name>/<config>/<version>``.

    The name and data_dir come from the folder's place; a copy built from a
    database adds the ``--manual_dir`` its ``metadata.json`` records, and
    ``--full_frame`` for a full-frame copy (kept in ``<data_dir>/full_frame``;
    other face options left at their defaults).
    """
    path = os.path.abspath(dataset_dir)
    config_dir = os.path.dirname(path)
    name = f"{os.path.basename(os.path.dirname(config_dir))}/{os.path.basename(config_dir)}"
    data_dir = os.path.dirname(os.path.dirname(config_dir))
    try:
        with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
            metadata = json.load(f)
        manual_dir, full_frame = metadata.get("manual_dir"), bool((metadata.get("faces") or {}).get("full_frame"))
    except (OSError, ValueError, AttributeError):
        manual_dir, full_frame = None, False
    if full_frame:   # datasets.build.stored_data_dir put it in <data_dir>/full_frame
        data_dir = os.path.dirname(data_dir)
    command = f"python -m datasets.build {name} --data_dir={shlex.quote(data_dir)}"
    if manual_dir:
        command += f" --manual_dir={shlex.quote(manual_dir)}"
    if full_frame:
        command += " --full_frame"
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
    action_units, objective_classes = [], []
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
        clip_frames, clip_landmarks = clip_ops.resize_clip(example["frames"], example["landmarks"], image_size)
        frames.append(clip_frames)
        landmarks.append(clip_landmarks)
        labels.append(int(example["label"]))
        subjects.append(schema.decode_text(example["subject"]))
        clip_ids.append(schema.decode_text(example["clip"]))
        fps.append(float(example["fps"]))
        apexes.append(int(example["apex"]))
        datasets.append(schema.decode_text(example["dataset"]))
        action_units.append(schema.decode_text(example["action_units"]))
        objective_classes.append(int(example["objective_class"]))
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
        action_units=np.asarray(action_units, dtype=str),
        objective_classes=np.asarray(objective_classes, np.int32),
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
