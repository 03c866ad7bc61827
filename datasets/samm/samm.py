"""TFDS builder ``samm``: SAMM from the user's copy and its FACS-codes sheet.

Frames ``SAMM/006/006_1_2/006_05562.jpg`` are grayscale (stored as 3 equal
channels) with frame numbers padded to 4 or 5 digits (parsed, not assumed).
The sheet is ``SAMM_Micro_FACS_Codes_v2.xlsx`` (13 preamble rows, header on
row 14) or the single-header ``SAMM_20181215`` release; the header is found by
name. Apexes outside onset..offset (028_4_1, 032_3_1) become unknown (counted).
The ``cropped`` configs read a face-cropped copy of the tree (a folder whose
name contains "crop", e.g. SAMM_CROP), which some groups make themselves.
Known totals: 159 clips (reference/datasets.md §3.3). Each example keeps the
sheet's Action Units as written and its Objective Class (1..7 stored as 0..6).
"""

from __future__ import annotations

import re
from pathlib import Path

from datasets.core import layout
from datasets.core.builder import ClipSource, RealMEBuilder, RealMEConfig
from datasets.core.coded import newest_sheet, sheet_clips
from datasets.core.frames import frame_pattern
from datasets.core.quirks import QuirkLog
from datasets.core.sheets import read_samm_codes
from merjax.data import labels

DATASET = "samm"
FPS = 200.0
SUBJECT_FOLDER = re.compile(r"^\d{3}$")
CLIP_FOLDER = re.compile(r"^\d{3}_\d+_\d+$")
SHEET = re.compile(r"^samm.*\.xlsx$", re.IGNORECASE)
FRAME = frame_pattern(r"\d+_")
EMOTION_COUNTS = {"anger": 57, "other": 26, "happiness": 26, "surprise": 15, "contempt": 12, "disgust": 9,
                  "fear": 8, "sadness": 6}
LABEL_MAPS = {"": (labels.SAMM_8, labels.identity_map(labels.SAMM_8)),
              "_megc3": (labels.MEGC_3, labels.MEGC3_MAP),
              "_4class": (labels.FOUR_CLASS, labels.FOUR_CLASS_MAP)}

LAYOUT = """
ROOT/SAMM_Micro_FACS_Codes_v2.xlsx           (or SAMM_20181215_Micro_FACS_Codes_v2.xlsx; a few levels down is fine)
ROOT/SAMM/006/006_1_2/006_05562.jpg ...       (raw configs; subject folders 006..037)
ROOT/SAMM_CROP/006/006_1_2/006_05562.jpg ...  (cropped configs: any folder whose name contains 'crop')
"""


def _config(tree: str, suffix: str) -> RealMEConfig:
    classes, label_map = LABEL_MAPS[suffix]
    return RealMEConfig(
        name=tree + suffix,
        description=f"SAMM (200 fps, grayscale as 3 channels), {tree} tree, classes {', '.join(classes)}",
        class_names=classes, label_map=label_map, tree=tree, known_emotion_counts=EMOTION_COUNTS)


CONFIGS = [_config(tree, suffix) for tree in ("raw", "cropped") for suffix in LABEL_MAPS]


def _is_tree(folder: Path, cropped: bool) -> bool:
    """``folder`` holds ``006/006_1_2`` style subject/clip folders (and is or is not a cropped copy)."""
    if ("crop" in folder.name.lower()) != cropped:
        return False
    return any(child.is_dir() and SUBJECT_FOLDER.match(child.name)
               and any(clip.is_dir() and CLIP_FOLDER.match(clip.name) for clip in child.iterdir())
               for child in folder.iterdir())


def locate_clips(manual_dir: Path, tree: str, quirks: QuirkLog, builder: str = DATASET) -> list[ClipSource]:
    """The clips of ``tree`` listed in the FACS-codes sheet; ManualDirError if the tree or sheet is missing."""
    root = layout.find_dir(manual_dir, lambda folder: _is_tree(folder, tree == "cropped"))
    if root is None:
        raise layout.manual_dir_error(builder, manual_dir, f"no {tree} SAMM tree (006/006_1_2/...) found", LAYOUT)
    sheets = layout.find_files(manual_dir, lambda path: bool(SHEET.match(path.name)))
    if not sheets:
        raise layout.manual_dir_error(builder, manual_dir, "no SAMM*.xlsx FACS-codes sheet found", LAYOUT)
    coded = read_samm_codes(newest_sheet(sheets, DATASET, quirks), quirks)
    return sheet_clips(coded, root, FRAME, DATASET, FPS, quirks)


class Samm(RealMEBuilder):
    """SAMM micro-expression clips (200 fps, grayscale) with the FACS-codes sheet's spans and emotions."""

    BUILDER_CONFIGS = CONFIGS
    LAYOUT = LAYOUT

    def find_clips(self, manual_dir: Path, quirks: QuirkLog) -> list[ClipSource]:
        return locate_clips(manual_dir, self.builder_config.tree, quirks, self.name)
