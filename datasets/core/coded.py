"""Clips of the databases that ship a coding sheet (CASME II, SAMM): sheet rows matched to frame folders.

The sheet lists the clips (subject, Filename, onset/apex/offset, emotion, action
units, objective class where the release has it); the
frame tree holds ``<subject>/<Filename>/`` folders. A listed clip without a
folder is skipped and counted (``missing_clip_folder``), a folder the sheet
does not list is counted too (``unlisted_clip_folder``), and subject folders
written another way than the sheet's (``sub1`` for ``sub01``) are matched by
their number (``subject_folder_renamed``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from datasets.core.builder import ClipSource
from datasets.core.frames import IGNORED_FILES, list_frames
from datasets.core.quirks import QuirkLog
from datasets.core.sheets import CodedClip
from merjax.data import schema
from merjax.data.protocols import natural_key

_NUMBER = re.compile(r"(\d+)")


def _subject_number(name: str) -> int | None:
    match = _NUMBER.search(name)
    return int(match.group(1)) if match else None


def subject_folders(tree: Path, where: str, quirks: QuirkLog) -> dict[int, Path]:
    """The subject folders of ``tree`` by subject number; files at this level are stray (counted)."""
    folders: dict[int, Path] = {}
    for entry in sorted(tree.iterdir(), key=lambda path: natural_key(path.name)):
        number = _subject_number(entry.name) if entry.is_dir() else None
        if number is None or number in folders:
            quirks.skipped("stray_entry", where, entry.name)
            continue
        folders[number] = entry
    return folders


def newest_sheet(sheets: Sequence[Path], dataset: str, quirks: QuirkLog) -> Path:
    """The sheet with the latest 8-digit date in its name (else the last by name); several are counted."""
    def date_of(path: Path) -> str:
        dates = re.findall(r"(?<!\d)(\d{8})(?!\d)", path.name)
        return dates[-1] if dates else ""

    chosen = max(sheets, key=lambda path: (date_of(path), path.name))
    if len(sheets) > 1:
        quirks.fixed("several_coding_sheets", dataset,
                     f"used {chosen.name}; also found {', '.join(p.name for p in sheets if p != chosen)}")
    quirks.read_annotation(chosen)
    return chosen


def sheet_clips(coded: Sequence[CodedClip], tree: Path, frame_pattern: re.Pattern[str], dataset: str,
                fps: float, quirks: QuirkLog) -> list[ClipSource]:
    """One ClipSource per sheet row whose ``tree/<subject>/<clip>`` folder holds frames, in sheet order."""
    folders = subject_folders(tree, f"{dataset} {tree.name}", quirks)
    listed: set[tuple[int, str]] = set()
    sources = []
    for row in coded:
        where = f"{dataset} {row.subject}/{row.clip}"
        number = _subject_number(row.subject)
        subject_folder = folders.get(number) if number is not None else None
        listed.add((number, row.clip))
        if subject_folder is None or not (subject_folder / row.clip).is_dir():
            quirks.skipped("missing_clip_folder", where, f"no folder {tree.name}/{row.subject}/{row.clip}")
            continue
        if subject_folder.name != row.subject:
            quirks.fixed("subject_folder_renamed", where, f"sheet {row.subject}, folder {subject_folder.name}")
        frames = list_frames(subject_folder / row.clip, frame_pattern, where, quirks)
        if not frames:
            quirks.skipped("empty_clip_folder", where, "no frame files")
            continue
        sources.append(ClipSource(
            dataset, row.subject, row.clip, row.emotion, tuple(frames), fps, onset=row.onset, apex=row.apex,
            offset=row.offset, action_units=row.action_units,
            objective_class=schema.UNKNOWN_OBJECTIVE_CLASS if row.objective_class is None else row.objective_class))
    for number, subject_folder in folders.items():
        for entry in sorted(subject_folder.iterdir()):
            if not entry.is_dir():
                if not IGNORED_FILES.match(entry.name):
                    quirks.skipped("stray_file", f"{dataset} {subject_folder.name}", entry.name)
            elif (number, entry.name) not in listed:
                quirks.skipped("unlisted_clip_folder", f"{dataset} {subject_folder.name}/{entry.name}",
                               "not in the coding sheet")
    return sources
