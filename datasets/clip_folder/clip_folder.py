"""TFDS builder ``clip_folder``: a researcher's own clips (frame folders or videos) listed in ``labels.csv``.

Put the clips in one folder with a ``labels.csv`` next to them and build::

    python -m datasets.build clip_folder --manual_dir=/data/my_me --data_dir=/data/tfds --crop_size=128

Example ``/data/my_me``::

    labels.csv
    s01/happy_1/frame_0001.png frame_0002.png ...   a clip as a folder of frames
    s01/sad_2.mp4                                    a clip as a video (.mp4 .avi .mov .mkv)
    take_07/img7.jpg img8.jpg ...                    a clip right under the root

with ``labels.csv``::

    subject,clip,label,onset,apex,offset,fps,action_units,objective_class
    s01,happy_1,positive,1,4,9,200,6+12,1
    s01,sad_2,negative,,12,,,,
    s02,take_07,surprise,7,9,11,100,AU1+AU2,II

Examples have the schema of every merjax builder (faces cropped at build time
with the shared core, ``dataset`` = ``clip_folder``), so every experiment runs
on them with ``--config.data.name=clip_folder``.

**CSV** (``labels.csv``, UTF-8, comma separated, the first line is the header;
header names are matched without case or surrounding spaces, other columns are
ignored):

* ``subject``, ``clip``, ``label`` (required): ids stored exactly as written;
  ``label`` is the class word (also stored as ``emotion``).
* ``onset``, ``apex``, ``offset`` (optional; an empty cell or -1 = unknown):
  for a frame folder, frame NUMBERS as in the file names (``frame_0004.png`` is
  4); for a video, 0-based frame indices. Only onset..offset is kept (all
  frames when both are unknown); ``apex`` is stored as an index into the kept
  frames. A value that is not a whole number >= 0, or onset after offset,
  raises ``UserError`` naming the file, line and value: the CSV is yours to
  fix, so nothing is guessed.
* ``fps`` (optional): frames per second. A video without it takes its
  container's rate; a frame folder without it (or a video whose container has
  no rate) stores 0.0 and counts ``fps_unknown``. Repeat it on every row.
* ``action_units`` (optional): the clip's FACS action units, stored exactly
  as written ('' when absent or empty).
* ``objective_class`` (optional): the objective class of Davison et al., 1..7
  or I..VII, stored as 0..6 (empty, -1 or no column = unknown, -1); any other
  value raises ``UserError`` naming the file, line and value.

**Classes**: the sorted (Python string order) set of the labels of the accepted
CSV rows, so the class set and label ids depend only on the CSV, not on which
clips are found on disk; ``info.features["label"].names`` gives them.

**Clips**: row (subject, clip) is looked up, in this order, as
``<subject>/<clip>/``, ``<subject>/<clip>.<video>``, ``<clip>/``,
``<clip>.<video>`` next to ``labels.csv`` (a clip cell may already carry the
video suffix). A frame folder's frames are the image files (bmp, jpg, png,
tif) ordered by the LAST number in their names; other files are counted
(``stray_file``). Videos are read with OpenCV (``cv2.VideoCapture``, BGR to RGB).

**Quirks** (counted in the build report, never dropped silently):
skipped ``missing_clip`` (row without a clip on disk), ``unlisted_clip`` (a
frame folder or video at the root or in a subject folder that no row lists), ``duplicate_row`` (a repeated
subject+clip, later rows), ``clip_used_twice`` (two rows resolving to the same
folder/file), ``unreadable_video`` (cannot be opened or no frame decodes),
``empty_clip_folder``; fixed ``apex_outside`` (apex outside onset..offset or
outside the frames read: unknown), ``ambiguous_clip`` (several candidates: the
first in the order above is used), ``fps_unknown``, ``blank_row``; and the
shared ones (``no_face``, ``frame_gap``, ``corrupt_frame``,
``trimmed_to_onset_offset``, ``span_beyond_frames``, ...).

One prepared copy per data_dir: the dataset is always ``clip_folder/default``,
so build different clip folders into different ``--data_dir``. The build
report records the manual_dir and stamps the copy with what it was read from
(``source_stamp``): the resolved ``labels.csv`` path, the CSV's SHA-256 and, per
clip, a digest of its files' paths, sizes and modification times. Hashing every
frame would read every byte at each experiment start (gigabytes for a real
database; seconds to minutes from disk); sizes alone miss
a BMP frame replaced by another of the same dimensions; size + mtime is what
``make`` and ``rsync`` trust, costs one ``stat`` per frame, and errs on the
safe side (a copy made without keeping times asks for a rebuild). A later
``datasets.build`` or experiment refuses the copy when any of it changed
(``source_changes``), naming what and the ``--overwrite`` command that
rebuilds it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from datasets.core import layout
from datasets.core.builder import ClipSource, RealMEBuilder, RealMEConfig, clip_example, face_example
from datasets.core.frames import IGNORED_FILES, frame_pattern, list_frames
from datasets.core.quirks import QuirkLog
from datasets.core.sheets import objective_class_index
from merjax import faces as face_ops
from merjax import stamps
from merjax.data import schema
from merjax.errors import UserError

DATASET = "clip_folder"
CSV_NAME = "labels.csv"
REQUIRED_COLUMNS = ("subject", "clip", "label")
SPAN_COLUMNS = ("onset", "apex", "offset")
OPTIONAL_COLUMNS = (*SPAN_COLUMNS, "fps", "action_units", "objective_class")
HEADER = ",".join(REQUIRED_COLUMNS) + "[," + ",".join(OPTIONAL_COLUMNS) + "]"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
FRAME = frame_pattern(r".*?")       # the number is the last run of digits before the suffix
UNKNOWN_CELLS = ("", "-1")
CSV_SEARCH_DEPTH = 2

LAYOUT = f"""
ROOT/{CSV_NAME}                         header: {HEADER}
ROOT/<subject>/<clip>/frame_0001.png ...  a clip as frame images (bmp/jpg/png/tif), ordered by
ROOT/<clip>/img1.jpg ...                  the last number in the file name
ROOT/<subject>/<clip>.mp4                 or as a video (.mp4 .avi .mov .mkv)
ROOT/<clip>.avi
ROOT may also hold the folder with {CSV_NAME} one or two levels down; clips are looked up next to it.
"""

CONFIG = RealMEConfig(
    name="default",
    description=f"Your own clips listed in {CSV_NAME}; classes = the sorted labels of the CSV",
    class_names=(),     # known only at build time, from the CSV
)


@dataclasses.dataclass(frozen=True)
class CsvRow:
    """One accepted data row of ``labels.csv`` (cells stripped; None = unknown)."""

    line: int
    subject: str
    clip: str
    label: str
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    fps: float | None = None
    action_units: str = ""
    objective_class: int = schema.UNKNOWN_OBJECTIVE_CLASS


@dataclasses.dataclass(frozen=True)
class FolderClip(ClipSource):
    """A ClipSource that is either a frame folder (``frames``) or a video (``video``; indices as numbers).

    ``fps`` 0.0 means the CSV gives none (a video then takes its container's).
    """

    video: Path | None = None


def _frame_cell(path: Path, line: int, column: str, text: str) -> int | None:
    if text in UNKNOWN_CELLS:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer() or value < 0:
        raise UserError(f"{path} line {line}: {column} {text!r} is not a frame number "
                         f"(a whole number >= 0; empty or -1 = unknown)")
    return int(value)


def _fps_cell(path: Path, line: int, text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{path} line {line}: fps {text!r} is not a positive number (empty = unknown)")
    return value


def _objective_class_cell(path: Path, line: int, text: str) -> int:
    if text in UNKNOWN_CELLS:
        return schema.UNKNOWN_OBJECTIVE_CLASS
    index = objective_class_index(text)
    if index is None:
        raise UserError(f"{path} line {line}: objective_class {text!r} is not an objective class "
                        f"(1..7 or I..VII; empty or -1 = unknown)")
    return index


def _cell(cells: Sequence[str], columns: Mapping[str, int], name: str) -> str:
    index = columns.get(name)
    return cells[index].strip() if index is not None and index < len(cells) else ""


def _columns(path: Path, header: Sequence[str]) -> dict[str, int]:
    names = [cell.strip().lower() for cell in header]
    for name in set(names):
        if name and names.count(name) > 1:
            raise UserError(f"{path} line 1: column {name!r} appears {names.count(name)} times")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        hint = "; the CSV must be comma separated" if any(";" in cell or "\t" in cell for cell in header) else ""
        raise UserError(f"{path} line 1: missing required column(s) {', '.join(missing)}; header is "
                         f"{','.join(header)!r}, expected {HEADER}{hint}")
    return {name: names.index(name) for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in names}


def read_labels_csv(path: str | Path, quirks: QuirkLog) -> list[CsvRow]:
    """The accepted rows of ``labels.csv`` in file order.

    Blank rows (``blank_row``) and repeats of a subject+clip (``duplicate_row``,
    the first row is kept) are counted; an apex outside onset..offset becomes
    unknown (``apex_outside``).

    Raises:
      UserError: naming the file and line: no header, a missing required
        column, an empty subject/clip/label cell, a bad onset/apex/offset/fps/
        objective_class value, onset after offset, or more cells than header
        columns.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error})") from error
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise UserError(f"{path} line 1: no header; the first line must be {HEADER}")
        columns = _columns(path, header)
        rows: list[CsvRow] = []
        seen: dict[tuple[str, str], int] = {}
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                quirks.fixed("blank_row", f"{path.name} line {line}", "empty row ignored")
                continue
            if any(cell.strip() for cell in cells[len(header):]):
                raise UserError(f"{path} line {line}: {len(cells)} cells but the header has {len(header)} "
                                 f"columns: {cells!r}")
            for name in REQUIRED_COLUMNS:
                if not _cell(cells, columns, name):
                    raise UserError(f"{path} line {line}: empty {name} cell: {cells!r}")
            subject, clip, label = (_cell(cells, columns, name) for name in REQUIRED_COLUMNS)
            onset, apex, offset = (_frame_cell(path, line, name, _cell(cells, columns, name)) for name in SPAN_COLUMNS)
            fps = _fps_cell(path, line, _cell(cells, columns, "fps"))
            objective_class = _objective_class_cell(path, line, _cell(cells, columns, "objective_class"))
            if onset is not None and offset is not None and onset > offset:
                raise UserError(f"{path} line {line}: onset {onset} is after offset {offset}")
            where = f"{DATASET} {subject}/{clip}"
            if apex is not None and ((onset is not None and apex < onset) or (offset is not None and apex > offset)):
                quirks.fixed("apex_outside", where, f"{path.name} line {line}: apex {apex} outside onset..offset "
                                                    f"{onset}..{offset}; set to unknown (-1)")
                apex = None
            if (subject, clip) in seen:
                quirks.skipped("duplicate_row", where, f"{path.name} line {line} repeats line {seen[subject, clip]}")
                continue
            seen[subject, clip] = line
            rows.append(CsvRow(line, subject, clip, label, onset, apex, offset, fps,
                               _cell(cells, columns, "action_units"), objective_class))
    except csv.Error as error:
        raise UserError(f"{path} line {reader.line_num}: {error}") from error
    return rows


def class_names(rows: Sequence[CsvRow]) -> tuple[str, ...]:
    """The class set: the sorted labels of the rows."""
    return tuple(sorted({row.label for row in rows}))


def find_csv(manual_dir: Path) -> Path | None:
    """``labels.csv`` (any case) in ``manual_dir`` or the shallowest folder below it holding one, or None."""
    def csv_in(folder: Path) -> Path | None:
        return next((path for path in sorted(folder.iterdir())
                     if path.name.lower() == CSV_NAME and path.is_file()), None)

    folder = layout.find_dir(manual_dir, lambda candidate: csv_in(candidate) is not None, CSV_SEARCH_DEPTH)
    return None if folder is None else csv_in(folder)


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(FRAME.match(child.name) for child in path.iterdir())


class _Listings:
    """Cached folder listings (the root is listed once per row otherwise)."""

    def __init__(self) -> None:
        self._entries: dict[Path, list[Path]] = {}

    def videos(self, target: Path) -> list[Path]:
        """Video files named ``target`` (with or without a video suffix, any case)."""
        folder = target.parent
        if folder not in self._entries:
            self._entries[folder] = sorted(folder.iterdir()) if folder.is_dir() else []
        return [path for path in self._entries[folder]
                if (path.stem == target.name or path.name == target.name) and _is_video(path)]


def clip_candidates(root: Path, subject: str, clip: str, listings: _Listings) -> list[Path]:
    """The folders/videos that may hold row (subject, clip), most specific first."""
    found: list[Path] = []
    for folder in (root / subject, root):
        target = folder / clip
        if target.is_dir():
            found.append(target)
        found.extend(path for path in listings.videos(target) if path not in found)
    return found


def find_clips(root: Path, rows: Sequence[CsvRow], names: Sequence[str], quirks: QuirkLog) -> list[FolderClip]:
    """One FolderClip per row whose clip is on disk, in CSV order; clips on disk no row lists are counted."""
    listings = _Listings()
    used: dict[Path, CsvRow] = {}
    claimed: set[Path] = set()    # every candidate of a row: reported as ambiguous, not as unlisted
    sources: list[FolderClip] = []
    for row in rows:
        where = f"{DATASET} {row.subject}/{row.clip}"
        found = clip_candidates(root, row.subject, row.clip, listings)
        if not found:
            quirks.skipped("missing_clip", where, f"{CSV_NAME} line {row.line}: no folder or video "
                                                  f"{row.subject}/{row.clip}[.mp4|...] or {row.clip}[.mp4|...]")
            continue
        claimed.update(found)
        path = found[0]
        relative = path.relative_to(root)
        if len(found) > 1:
            quirks.fixed("ambiguous_clip", where, f"used {relative}; also found "
                                                  f"{', '.join(str(p.relative_to(root)) for p in found[1:])}")
        if path in used:
            quirks.skipped("clip_used_twice", where, f"{CSV_NAME} line {row.line}: {relative} is already the clip "
                                                     f"of line {used[path].line} ({used[path].subject}/"
                                                     f"{used[path].clip})")
            continue
        used[path] = row
        common: dict[str, Any] = {
            "dataset": DATASET, "subject": row.subject, "clip": row.clip, "emotion": row.label,
            "fps": row.fps or 0.0, "onset": row.onset, "apex": row.apex, "offset": row.offset,
            "label": names.index(row.label), "action_units": row.action_units,
            "objective_class": row.objective_class}
        if path.is_dir():
            frames = list_frames(path, FRAME, where, quirks)
            if not frames:
                quirks.skipped("empty_clip_folder", where, f"{relative}: no frame files")
                continue
            sources.append(FolderClip(frames=tuple(frames), **common))
        else:
            sources.append(FolderClip(frames=(), video=path, **common))
    for path in unlisted_clips(root, claimed):
        quirks.skipped("unlisted_clip", f"{DATASET} {path.relative_to(root)}", f"not in {CSV_NAME}")
    return sources


def unlisted_clips(root: Path, used: set[Path]) -> list[Path]:
    """Frame folders and videos at ``root`` or one subject folder below it that no row uses."""
    unlisted = []
    for entry in sorted(root.iterdir()):
        if entry in used or IGNORED_FILES.match(entry.name):
            continue
        if _is_video(entry) or _is_frame_folder(entry):
            unlisted.append(entry)
        elif entry.is_dir():
            unlisted.extend(child for child in sorted(entry.iterdir())
                            if child not in used and not IGNORED_FILES.match(child.name)
                            and (_is_video(child) or _is_frame_folder(child)))
    return unlisted


def read_video(path: Path, onset: int | None, offset: int | None, where: str,
               quirks: QuirkLog) -> tuple[np.ndarray, list[int], float] | None:
    """The RGB frames onset..offset (0-based indices) of a video, their indices and the container's fps.

    Returns None when the video is skipped: ``unreadable_video`` (cannot be
    opened, no frame decodes) or ``no_frames_in_span``. A span reaching past
    the last frame keeps what exists (``span_beyond_frames``); frames outside
    the span are counted (``trimmed_to_onset_offset``). The fps is 0.0 when the
    container gives none.
    """
    import cv2   # imported here: only video clips need OpenCV

    first = onset if onset is not None else 0
    last = offset if offset is not None else math.inf
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            quirks.skipped("unreadable_video", where, f"{path.name}: OpenCV cannot open it")
            return None
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        images, numbers, total = [], [], 0
        while True:
            if first <= total <= last:
                ok, frame = capture.read()
            else:
                ok, frame = capture.grab(), None   # outside the span: counted, not decoded
            if not ok:
                break
            if frame is not None:
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
                else:
                    frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[-1] == 4 else cv2.COLOR_BGR2RGB)
                images.append(frame)
                numbers.append(total)
            total += 1
    finally:
        capture.release()
    if total == 0:
        quirks.skipped("unreadable_video", where, f"{path.name}: no frame decodes")
        return None
    if not images:
        quirks.skipped("no_frames_in_span", where, f"onset..offset {onset}..{offset}, video frames 0..{total - 1}")
        return None
    if offset is not None and offset > total - 1:
        quirks.fixed("span_beyond_frames", where, f"onset..offset {onset}..{offset}, video frames 0..{total - 1}")
    if len(images) < total:
        quirks.fixed("trimmed_to_onset_offset", where, f"{total - len(images)} frame(s) outside {first}.."
                                                       f"{min(last, total - 1)} left out")
    return np.stack(images), numbers, fps if math.isfinite(fps) and fps > 0 else 0.0


def _set_class_names(label: tfds.features.ClassLabel, names: Sequence[str]) -> None:
    """Sets the ClassLabel's names, also over those restored from an earlier build being overwritten."""
    names = list(names)
    if label.num_classes is not None and label.names != names:
        # TFDS allows names to be set once; a builder created over a prepared copy has its names
        # restored from disk. The copy is regenerated, so the old names are dropped.
        label._int2str, label._str2int, label._num_classes = None, None, None
    label.names = names


def clip_files_digest(root: Path, source: FolderClip) -> str:
    """A digest of the files clip ``source`` is read from: their paths below ``root``, sizes and mtimes."""
    paths = [source.video] if source.video is not None else [frame.path for frame in source.frames]
    entries = [[str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns] for path in paths]
    return stamps.digest_value(entries)[:16]


def source_stamp(csv_path: Path, sources: Sequence[FolderClip]) -> dict[str, Any]:
    """What a build read: the resolved ``labels.csv`` path, its SHA-256 and each clip's files digest."""
    return {
        "csv": str(csv_path.resolve()),
        "csv_sha256": stamps.digest_file(csv_path),
        "clips": {f"{source.subject}/{source.clip}": clip_files_digest(csv_path.parent, source) for source in sources},
    }


def _some(names: Sequence[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def stamp_changes(recorded: Mapping[str, Any], manual_dir: Path) -> list[str]:
    """What differs between the stamp ``recorded`` by a build and ``manual_dir`` now (empty: nothing)."""
    path = find_csv(manual_dir)
    if path is None:
        return [f"{manual_dir} holds no {CSV_NAME} any more"]
    if str(path.resolve()) != recorded["csv"]:
        return [f"its {CSV_NAME} was {recorded['csv']}, now {path.resolve()}"]
    if stamps.digest_file(path) != recorded["csv_sha256"]:
        return [f"{path} changed since the build"]
    quirks = QuirkLog()   # the build's report holds the quirks; here only the clips found count
    rows = read_labels_csv(path, quirks)
    current = source_stamp(path, find_clips(path.parent, rows, class_names(rows), quirks))["clips"]
    before = recorded["clips"]
    changes = []
    for names, what in (
            (sorted(name for name in before.keys() & current.keys() if before[name] != current[name]),
             "had files added, removed or modified"),
            (sorted(current.keys() - before.keys()), "listed in the CSV appeared on disk"),
            (sorted(before.keys() - current.keys()), "disappeared from disk")):
        if names:
            changes.append(f"{len(names)} clip(s) {what} ({_some(names)})")
    return changes


class ClipFolder(RealMEBuilder):
    """Your own micro-expression clips (frame folders or videos) listed in labels.csv; classes from the CSV."""

    BUILDER_CONFIGS = [CONFIG]
    LAYOUT = LAYOUT

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.builder_config.description}\n\n{type(self).__doc__}",
            features=schema.features(None, self.faces.crop_size),
            metadata=tfds.core.MetadataDict(),
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info.features["label"].names)

    def find_clips(self, manual_dir: Path, quirks: QuirkLog) -> list[ClipSource]:
        path = find_csv(manual_dir)
        if path is None:
            raise layout.manual_dir_error(self.name, manual_dir, f"no {CSV_NAME} found", LAYOUT)
        rows = read_labels_csv(path, quirks)
        if not rows:
            raise layout.manual_dir_error(self.name, path.parent, f"{path.name} lists no clips", LAYOUT)
        names = class_names(rows)
        _set_class_names(self.info.features["label"], names)
        self._csv_path = path
        sources = find_clips(path.parent, rows, names, quirks)
        if not sources:
            raise layout.manual_dir_error(
                self.name, path.parent, f"none of the {len(rows)} clips listed in {path.name} was found", LAYOUT)
        return sources

    def example(self, source: FolderClip, detector: face_ops.LandmarkDetector,  # type: ignore[override]
                quirks: QuirkLog) -> dict[str, Any] | None:
        """``source`` (labelled by ``find_clips``) as an example of the schema, or None when skipped (logged)."""
        if source.video is None:
            example = clip_example(source, source.label, self.faces, detector, quirks)
        else:
            read = read_video(source.video, source.onset, source.offset, source.where, quirks)
            if read is None:
                return None
            images, numbers, container_fps = read
            source = dataclasses.replace(source, fps=source.fps or container_fps)
            example = face_example(source, images, numbers, source.label, self.faces, detector, quirks)
        if example is not None and not source.fps:
            quirks.fixed("fps_unknown", source.where, f"no fps in {CSV_NAME}"
                                                      + (" nor in the video" if source.video else "")
                                                      + "; stored as 0.0")
        return example

    def _report(self, sources: list[ClipSource], written: Mapping[str, int], quirks: QuirkLog) -> dict[str, Any]:
        report = super()._report(sources, written, quirks)
        report["csv"] = str(self._csv_path)
        report["stamp"] = source_stamp(self._csv_path, sources)
        return report

    def source_changes(self, report: Mapping[str, Any], manual_dir: Path) -> list[str]:
        """What changed in ``manual_dir`` since the build that wrote ``report`` (``datasets.build`` asks).

        A copy built before stamps were recorded cannot be checked: nothing is reported.
        """
        return stamp_changes(report["stamp"], manual_dir) if "stamp" in report else []
