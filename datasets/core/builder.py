"""The base TFDS builder of the real databases: clips found on disk -> face crops (or full frames) -> the shared schema.

A database package only says where its clips are (``find_clips``: a list of
``ClipSource`` — subject, clip, emotion word, frame files, onset/apex/offset as
frame numbers) and which class set and label map each config uses. This module
does the rest once for all of them: it keeps the frames of onset..offset, reads
them, finds the face on the first frame (``merjax.faces``), crops every frame
with that fixed box (or, with ``FaceOptions.full_frame``, keeps the whole frame),
places landmarks (first frame by default, every frame on request), turns frame
numbers into indices, validates the example and logs
every quirk. At the end it checks the per-class counts against the database's
known totals and stores the quirk log, the counts and the face options in the
dataset's ``metadata.json`` (``read_build_report``), which ``datasets.build``
prints.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from datasets.core import layout
from datasets.core.frames import FrameFile, read_clip
from datasets.core.quirks import QuirkLog, count_differences
from datasets.core.serialization import build_writing
from merjax import faces as face_ops
from merjax import stamps
from merjax.data import labels, schema
from merjax.errors import UserError

METADATA_FILE = "metadata.json"


@dataclasses.dataclass(frozen=True)
class FaceOptions:
    """How faces are cropped (or full frames kept) and landmarked at build time (stored with the dataset).

    Attributes:
      crop_size: side of the square face crop, pixels.
      margin: the crop box is the first frame's landmark box grown by this
        fraction of its side on every side (``merjax.faces.face_box``).
      every_frame_landmarks: place landmarks on every frame (inside the first
        frame's face box) instead of repeating the first frame's (seed 002).
      detector: landmark backend, ``dlib`` (offline default) or ``fan``.
      detector_weights: local weight file of the backend ('' = dlib's packaged
        68-point model; the 2D-FAN TorchScript file for ``fan``, required).
      detector_upsample: times dlib's HOG detector (also FAN's face finder)
        upsamples a frame first: 1 finds faces down to ~40 px, 0 only from
        ~80 px but is ~4x faster on 640x480 frames.
      max_face_tries: frames tried, from the first on, until a face is found.
      full_frame: store the whole frame instead of the face crop (seed 001 works
        without face cropping, its contribution 2). The schema's frames are
        ``crop_size`` squares, so each frame is letterboxed into one
        (``merjax.faces.frame_box``): scaled with its aspect kept until its
        longer side is ``crop_size``, centred, the shorter axis filled out with
        the frame's replicated edge pixels (SMIC-HS's 640x480 at 224: the frame
        at 224x168 between two 28-pixel bars). The face is still found on the
        first frame (a clip without one is still skipped) and the landmarks are
        stored in the stored frame's coordinates, scale and offset applied;
        ``margin`` is then unused. Full-frame copies are kept in their own
        folder beside the face crops (``datasets.build.stored_data_dir``).
    """

    crop_size: int = 224
    margin: float = 0.1
    every_frame_landmarks: bool = False
    detector: str = "dlib"
    detector_weights: str = ""
    detector_upsample: int = 1
    max_face_tries: int = 5
    full_frame: bool = False

    def __post_init__(self) -> None:
        if self.crop_size < 8:
            raise UserError(f"crop_size must be at least 8 pixels, got {self.crop_size}")
        if not 0.0 <= self.margin <= 1.0:
            raise UserError(f"margin must lie in [0, 1], got {self.margin}")
        if self.max_face_tries < 1:
            raise UserError(f"max_face_tries must be at least 1, got {self.max_face_tries}")
        if self.detector_upsample < 0:
            raise UserError(f"detector_upsample must be >= 0, got {self.detector_upsample}")
        if self.detector == "fan" and not self.detector_weights:
            raise UserError("detector 'fan' needs detector_weights: the local 2D-FAN TorchScript file "
                             "(nothing is downloaded at run time)")

    def make_detector(self) -> face_ops.LandmarkDetector:
        if self.detector == "fan":
            return face_ops.make_detector(
                "fan", landmark_weights=self.detector_weights,
                face_detector=face_ops.DlibLandmarks(upsample=self.detector_upsample))
        options = {"predictor_path": self.detector_weights} if self.detector_weights else {}
        return face_ops.make_detector(self.detector, upsample=self.detector_upsample, **options)


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """One clip on disk before reading: ids as the database writes them, frame numbers as in file names.

    ``onset``/``offset`` (None: the folder spans the clip) select the frames
    kept; ``apex`` None means unknown. ``label`` set by the builder overrides the
    config's label map (the MEGC list gives labels itself). ``action_units`` is
    the database's AU string as written ('' where it codes none) and
    ``objective_class`` the objective class index 0..6 (I..VII), -1 unknown.
    """

    dataset: str
    subject: str
    clip: str
    emotion: str
    frames: tuple[FrameFile, ...]
    fps: float
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    label: int | None = None
    action_units: str = ""
    objective_class: int = schema.UNKNOWN_OBJECTIVE_CLASS

    @property
    def where(self) -> str:
        return f"{self.dataset} {self.subject}/{self.clip}"


@dataclasses.dataclass(eq=False)
class RealMEConfig(tfds.core.BuilderConfig):
    """A class set with its label map, the frame tree to read, and the known class totals.

    ``known_emotion_counts`` are the clip counts per emotion word of the
    database release (None: unknown); mapped through ``label_map`` they give
    the per-class totals the build is checked against. Classes no known word
    maps to (SMIC's non_micro) are not checked. ``known_total`` checks the
    total where only it is known (SMIC-VIS/NIR: 71).
    """

    class_names: tuple[str, ...] = labels.SMIC_3
    label_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tree: str = "raw"
    known_emotion_counts: Mapping[str, int] | None = None
    known_total: int | None = None


def expected_class_counts(known_emotion_counts: Mapping[str, int] | None, config: RealMEConfig) -> dict[str, int] | None:
    """Known clips per class under the config's map (only classes a known word maps to), or None."""
    if known_emotion_counts is None:
        return None
    mapped = {config.label_map.get(word.lower()) for word in known_emotion_counts}
    totals = labels.mapped_counts(known_emotion_counts, config.label_map, config.class_names)
    return {name: count for name, count in totals.items() if name in mapped}


def select_span(source: ClipSource, quirks: QuirkLog) -> list[FrameFile]:
    """The frames of ``source`` from onset to offset (all when the sheet gives no span).

    Frames outside the span are left out and counted (``trimmed_to_onset_offset``);
    a span reaching past the frames on disk keeps what exists
    (``span_beyond_frames``).
    """
    frames = list(source.frames)
    if source.onset is None and source.offset is None:
        return frames
    onset = source.onset if source.onset is not None else frames[0].number
    offset = source.offset if source.offset is not None else frames[-1].number
    if onset < frames[0].number or offset > frames[-1].number:
        quirks.fixed("span_beyond_frames", source.where,
                     f"onset..offset {onset}..{offset}, frames on disk {frames[0].number}..{frames[-1].number}")
    kept = [frame for frame in frames if onset <= frame.number <= offset]
    if len(kept) < len(frames):
        quirks.fixed("trimmed_to_onset_offset", source.where,
                     f"{len(frames) - len(kept)} frame(s) outside {onset}..{offset} left out")
    return kept


def apex_index(source: ClipSource, numbers: Sequence[int], quirks: QuirkLog) -> int:
    """The index of the apex frame in the frames read, or -1 when unknown.

    An apex whose frame is missing (gap, corrupt file) goes to the nearest frame
    read (``apex_frame_missing``); one outside the frames read is unknown
    (``apex_outside``).
    """
    if source.apex is None:
        return schema.UNKNOWN_INDEX
    if not numbers[0] <= source.apex <= numbers[-1]:
        quirks.fixed("apex_outside", source.where,
                     f"apex {source.apex} outside frames {numbers[0]}..{numbers[-1]}; set to unknown (-1)")
        return schema.UNKNOWN_INDEX
    index = int(np.argmin(np.abs(np.asarray(numbers) - source.apex)))
    if numbers[index] != source.apex:
        quirks.fixed("apex_frame_missing", source.where,
                     f"apex frame {source.apex} not read; nearest frame {numbers[index]} used")
    return index


def clip_example(source: ClipSource, label: int, options: FaceOptions, detector: face_ops.LandmarkDetector,
                 quirks: QuirkLog) -> dict[str, Any] | None:
    """``source`` as one example of the shared schema, or None when it had to be skipped (logged)."""
    frames = select_span(source, quirks)
    if not frames:
        quirks.skipped("no_frames_in_span", source.where, f"onset..offset {source.onset}..{source.offset}")
        return None
    read = read_clip(frames, source.where, quirks)
    if read is None:
        return None
    images, numbers = read
    return face_example(source, images, numbers, label, options, detector, quirks)


def face_example(source: ClipSource, images: np.ndarray, numbers: Sequence[int], label: int, options: FaceOptions,
                 detector: face_ops.LandmarkDetector, quirks: QuirkLog) -> dict[str, Any] | None:
    """The frames read for ``source`` (uint8 [T,H,W,3], their frame numbers) face-cropped (or, with
    ``options.full_frame``, letterboxed whole) into an example.

    None when no face is found (logged). ``clip_example`` calls it after reading
    a frame folder; builders reading frames otherwise (videos) call it directly.
    """
    found = face_ops.first_face(images, detector, options.max_face_tries)
    if found is None:
        quirks.skipped("no_face", source.where, f"no face in the first {min(options.max_face_tries, len(images))} "
                                                f"frame(s)")
        return None
    if found.frame_index > 0:
        use = "every frame's landmarks come from its box" if options.full_frame else "its box crops every frame"
        quirks.fixed("face_found_late", source.where, f"first face on frame {found.frame_index}; {use}")
    if found.border > 0:
        quirks.fixed("face_found_with_border", source.where,
                     f"face found once the frame was padded by {found.border} px (a tight crop)")
    box = (face_ops.frame_box(*images.shape[1:3]) if options.full_frame
           else face_ops.face_box(found.landmarks, options.margin))
    stored = face_ops.crop_frames(images, box, options.crop_size)
    if options.every_frame_landmarks:
        image_landmarks = np.stack([face_ops.landmarks_in(detector, image, found.box, found.border)
                                    for image in images])
    else:
        image_landmarks = np.repeat(found.landmarks[None], len(images), axis=0)
    return {
        "frames": stored,
        "landmarks": face_ops.to_crop_coordinates(image_landmarks, box, options.crop_size).astype(np.float32),
        "label": label,
        "emotion": source.emotion,
        "subject": source.subject,
        "clip": source.clip,
        "dataset": source.dataset,
        "onset": 0,
        "apex": apex_index(source, numbers, quirks),
        "offset": len(images) - 1,
        "fps": source.fps,
        "action_units": source.action_units,
        "objective_class": source.objective_class,
    }


class RealMEBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the licensed-database builders; subclasses give ``LAYOUT`` and ``find_clips``."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Examples carry action_units (the AU string as the coding sheet or labels.csv writes it; '' "
                 "where none is given, e.g. SMIC) and objective_class (I..VII as 0..6; -1 where none is given, "
                 "e.g. SMIC or the CASME II 20140508 sheet).",
    }
    LAYOUT = ""   # the expected manual_dir layout, shown in instructions and errors

    def __init__(self, *, faces: FaceOptions | None = None, **kwargs: Any) -> None:
        self.faces = faces or FaceOptions()
        super().__init__(**kwargs)

    @property
    def MANUAL_DOWNLOAD_INSTRUCTIONS(self) -> str:  # noqa: N802 (TFDS's attribute name)
        return self.LAYOUT

    @abc.abstractmethod
    def find_clips(self, manual_dir: Path, quirks: QuirkLog) -> list[ClipSource]:
        """Every clip of the config's tree under ``manual_dir``; raises ManualDirError if none."""

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{config.description}\n\n{type(self).__doc__}",
            features=schema.features(config.class_names, self.faces.crop_size),
            metadata=tfds.core.MetadataDict(),
        )

    def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                              download_config: tfds.download.DownloadConfig) -> None:
        self._manual_path = self._checked_manual_dir(download_config.manual_dir)
        with build_writing():
            super()._download_and_prepare(dl_manager, download_config)

    def _checked_manual_dir(self, manual_dir: Any) -> Path:
        if not manual_dir:
            raise layout.manual_dir_error(self.name, Path("(not given)"), "no --manual_dir given", self.LAYOUT)
        path = Path(str(manual_dir)).expanduser()
        if not path.is_dir() or not any(path.iterdir()):
            raise layout.manual_dir_error(self.name, path, "manual_dir does not exist or is empty", self.LAYOUT)
        return path

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        quirks = QuirkLog()
        sources = self.find_clips(self._manual_path, quirks)
        return {"train": self._generate_examples(sources, quirks)}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class set in label order (the config's; a builder may know it only at build time)."""
        return self.builder_config.class_names

    def label_of(self, source: ClipSource, quirks: QuirkLog) -> int | None:
        """The source's label under the config's map (or its own), None when excluded (logged)."""
        config = self.builder_config
        if source.label is not None:
            return source.label
        label = labels.label_of(source.emotion, config.label_map, config.class_names)
        if label is None:
            quirks.skipped("excluded_emotion", source.where, f"{source.emotion!r} is not in the {config.name} classes")
        return label

    def example(self, source: ClipSource, detector: face_ops.LandmarkDetector,
                quirks: QuirkLog) -> dict[str, Any] | None:
        """``source`` as an example of the shared schema, or None when it is left out (logged)."""
        label = self.label_of(source, quirks)
        if label is None:
            return None
        return clip_example(source, label, self.faces, detector, quirks)

    def _generate_examples(self, sources: list[ClipSource], quirks: QuirkLog) -> Iterator[tuple[str, dict[str, Any]]]:
        detector = self.faces.make_detector()
        written: collections.Counter[str] = collections.Counter()
        for source in sources:
            example = self.example(source, detector, quirks)
            if example is None:
                continue
            schema.validate(example, where=source.where)
            written[self.class_names[example["label"]]] += 1
            yield f"{source.dataset}/{source.subject}/{source.clip}", example
        self.info.metadata.update(self._report(sources, written, quirks))

    def known_emotion_counts(self) -> Mapping[str, int] | None:
        """Clips per emotion word of the database release read (default: the config's)."""
        return self.builder_config.known_emotion_counts

    def _report(self, sources: list[ClipSource], written: Mapping[str, int], quirks: QuirkLog) -> dict[str, Any]:
        config = self.builder_config
        counts = {name: written.get(name, 0) for name in self.class_names}
        expected = expected_class_counts(self.known_emotion_counts(), config)
        if expected is None and config.known_total is not None:
            expected = {"total": config.known_total}
            differences = count_differences({"total": sum(counts.values())}, expected)
        else:
            differences = None if expected is None else count_differences(counts, expected)
        return {
            "manual_dir": str(self._manual_path),
            "faces": dataclasses.asdict(self.faces),
            "clips_found": len(sources),
            "class_counts": counts,
            "expected_counts": expected,
            "count_differences": differences,
            "quirks": quirks.as_dict(),
            "annotations": {str(path): stamps.digest_file(path) for path in quirks.annotation_files},
        }

    def source_changes(self, report: Mapping[str, Any], manual_dir: Path) -> list[str]:
        """The annotation files (coding sheets) the build read that are gone or changed since (``datasets.build``
        asks before reusing a prepared copy). A copy built before they were recorded cannot be checked."""
        changes = []
        for name, digest in report.get("annotations", {}).items():
            path = Path(name)
            if not path.is_file():
                changes.append(f"{path} (read by the build) is gone")
            elif stamps.digest_file(path) != digest:
                changes.append(f"{path} changed since the build")
        return changes


def read_build_report(dataset_dir: str | Path) -> dict[str, Any] | None:
    """The build report a real-database builder stored with the prepared dataset (None if none)."""
    path = Path(dataset_dir) / METADATA_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The build report as lines for the terminal: counts, their check, every quirk."""
    counts = ", ".join(f"{name} {count}" for name, count in report["class_counts"].items())
    lines = [f"clips found: {report['clips_found']}; written: {sum(report['class_counts'].values())} ({counts})"]
    differences, expected = report["count_differences"], report["expected_counts"]
    if differences is None:
        lines.append("count check: no known totals for this config")
    elif differences:
        lines.append("count check: DIFFERS from the known totals:")
        lines.extend(f"  {line}" for line in differences)
    else:
        lines.append(f"count check: matches the known totals ({', '.join(f'{k} {v}' for k, v in expected.items())})")
    unchecked = [name for name in report["class_counts"] if name not in expected and "total" not in expected] \
        if expected else []
    if unchecked:
        lines.append(f"  not checked (no known total): {', '.join(unchecked)}")
    quirk_lines = QuirkLog.from_dict(report["quirks"]).lines()
    lines.append(f"quirks ({len(quirk_lines)} kinds):" if quirk_lines else "quirks: none")
    lines.extend(f"  {line}" for line in quirk_lines)
    return lines
