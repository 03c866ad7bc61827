"""TFDS builder ``casme2``: CASME II from the user's copy and its coding sheet.

Frames come from ``CASME2_RAW_selected`` (``img46.jpg``, the frames
onset..offset of each clip) or ``Cropped`` (``reg_img46.jpg``, also found
nested as ``Cropped-updated/Cropped``); clips, spans, apexes and emotions from
``CASME2-coding-*.xlsx`` (every release: 20140508, 20190701; header found by
name, blank columns, Subject as text '01', apex '/' -> unknown). When several
sheets lie in manual_dir the newest date is used (counted). Frame numbers come
from file names, stray files are counted. Known emotion counts per release
(reference/datasets.md §2.4) give the totals the build is checked against.
Each example keeps the sheet's Action Units as written and its Objective Class
(1..7 stored as 0..6); the 20140508 sheet has no objective classes (-1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from datasets.core import layout
from datasets.core.builder import ClipSource, RealMEBuilder, RealMEConfig
from datasets.core.coded import newest_sheet, sheet_clips
from datasets.core.frames import frame_pattern
from datasets.core.quirks import QuirkLog
from datasets.core.sheets import read_casme2_coding
from merjax.data import labels

DATASET = "casme2"
FPS = 200.0
SUBJECT_FOLDER = re.compile(r"^sub\d+$", re.IGNORECASE)
SHEET = re.compile(r"^casme2[-_ ]?coding.*\.xlsx$", re.IGNORECASE)
# tree -> (folder name, frame file pattern)
TREES = {"raw": ("casme2_raw_selected", frame_pattern("img")),
         "cropped": ("cropped", frame_pattern("reg_img"))}
# Clips per emotion word in each coding-sheet release (reference/datasets.md §2.4).
RELEASE_EMOTION_COUNTS: Mapping[str, Mapping[str, int]] = {
    "20190701": {"others": 99, "disgust": 63, "happiness": 32, "surprise": 28, "repression": 27,
                 "sadness": 4, "fear": 2},
    "20140508": {"others": 99, "disgust": 63, "happiness": 32, "repression": 27, "surprise": 25,
                 "sadness": 7, "fear": 2},
}
LABEL_MAPS = {"": (labels.CASME2_5, labels.identity_map(labels.CASME2_5)),
              "_megc3": (labels.MEGC_3, labels.MEGC3_MAP),
              "_4class": (labels.FOUR_CLASS, labels.FOUR_CLASS_MAP)}

LAYOUT = """
ROOT/CASME2-coding-20190701.xlsx            (or -20140508; anywhere a few levels down)
ROOT/CASME2_RAW_selected/sub01/EP02_01f/img46.jpg ...     (raw configs)
ROOT/Cropped/sub01/EP02_01f/reg_img46.jpg ...              (cropped configs; Cropped-updated/Cropped also found)
"""


def _config(tree: str, suffix: str) -> RealMEConfig:
    classes, label_map = LABEL_MAPS[suffix]
    return RealMEConfig(
        name=tree + suffix,
        description=f"CASME II (200 fps), {TREES[tree][0]} tree, classes {', '.join(classes)}",
        class_names=classes, label_map=label_map, tree=tree)


CONFIGS = [_config(tree, suffix) for tree in TREES for suffix in LABEL_MAPS]


def find_tree(manual_dir: Path, tree: str) -> Path | None:
    """The CASME2_RAW_selected or Cropped folder (holding sub## folders) under ``manual_dir``."""
    name = TREES[tree][0]
    return layout.find_dir(manual_dir, lambda folder: folder.name.lower() == name and any(
        child.is_dir() and SUBJECT_FOLDER.match(child.name) for child in folder.iterdir()))


def sheet_release(sheet: Path) -> str | None:
    """The release date in the sheet's name when it is a known release."""
    return next((release for release in RELEASE_EMOTION_COUNTS if release in sheet.name), None)


def locate_clips(manual_dir: Path, tree: str, quirks: QuirkLog, builder: str = DATASET) -> tuple[list[ClipSource], Path]:
    """The clips of ``tree`` listed in the coding sheet, and the sheet used; ManualDirError if either is missing."""
    root = find_tree(manual_dir, tree)
    if root is None:
        raise layout.manual_dir_error(builder, manual_dir, f"no {TREES[tree][0]} folder with sub## folders found",
                                      LAYOUT)
    sheets = layout.find_files(manual_dir, lambda path: bool(SHEET.match(path.name)))
    if not sheets:
        raise layout.manual_dir_error(builder, manual_dir, "no CASME2-coding-*.xlsx sheet found", LAYOUT)
    sheet = newest_sheet(sheets, DATASET, quirks)
    coded = read_casme2_coding(sheet, quirks)
    return sheet_clips(coded, root, TREES[tree][1], DATASET, FPS, quirks), sheet


class Casme2(RealMEBuilder):
    """CASME II micro-expression clips (200 fps) with the coding sheet's spans, apexes and emotions."""

    BUILDER_CONFIGS = CONFIGS
    LAYOUT = LAYOUT

    def find_clips(self, manual_dir: Path, quirks: QuirkLog) -> list[ClipSource]:
        sources, sheet = locate_clips(manual_dir, self.builder_config.tree, quirks, self.name)
        self.release = sheet_release(sheet)
        return sources

    def known_emotion_counts(self) -> Mapping[str, int] | None:
        return RELEASE_EMOTION_COUNTS.get(self.release) if self.release else None
