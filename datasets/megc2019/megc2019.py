"""TFDS builder ``megc2019``: the MEGC 2019 composite database (CDE) from the user's three databases.

The 442 samples are the ones of the official list shipped here as data
(``megc2019_composite_3class.csv``: ``dataset,subject,clip,label`` with 0
negative, 1 positive, 2 surprise; the website copy's 441 rows plus
``samm,32,032_3_1``, as in the challenge's table: 164 SMIC-HS + 145 CASME II +
133 SAMM = 250 / 109 / 83 from 68 subjects). The list, not label rules,
decides membership and label: rules would keep CASME II clips the organisers
left out (reference/datasets.md §4.3). Each database is found under
``manual_dir`` exactly as its own builder finds it, list ids are mapped to
folder names (SMIC ``s01_ne_01`` -> ``s1_ne_01``, SAMM ``6`` -> ``006``), and
each example keeps its database's own ids, emotion word, spans, fps, action
units and objective class (CASME II, SAMM; SMIC has none: '' and -1).
A listed clip not on disk is skipped and counted; a list label that differs
from the MEGC mapping of the database's own emotion word is counted (the list
wins). Evaluate with ``merjax.data.protocols.composite_loso`` (68 subjects).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from datasets.casme2 import casme2
from datasets.core import layout
from datasets.core.builder import ClipSource, RealMEBuilder, RealMEConfig
from datasets.core.quirks import QuirkLog
from datasets.core.sheets import MEGC_LABELS, disk_names, read_megc_list
from datasets.samm import samm
from datasets.smic import smic
from merjax.data import labels

DATASET = "megc2019"
LIST_FILE = Path(__file__).parent / "megc2019_composite_3class.csv"
CLASS_TOTALS = {"negative": 250, "positive": 109, "surprise": 83}
# config -> (SMIC-HS tree, CASME II tree); SAMM has one published tree
TREES = {"composite": ("raw", "raw"), "composite_cropped": ("cropped", "cropped")}

LAYOUT = f"""
ROOT holds the three databases, each in its own builder's layout, e.g.
ROOT/SMIC/HS/s1/micro/negative/s1_ne_01/image######.bmp    (composite_cropped: SMIC/SMIC_all_cropped/HS/...)
ROOT/CASME2/CASME2-coding-20190701.xlsx
ROOT/CASME2/CASME2_RAW_selected/sub01/EP02_01f/img46.jpg   (composite_cropped: CASME2/Cropped/...)
ROOT/SAMM/SAMM_Micro_FACS_Codes_v2.xlsx
ROOT/SAMM/SAMM/006/006_1_2/006_05562.jpg
The 442 samples are those of {LIST_FILE.name} (shipped with merjax).
"""

CONFIGS = [
    RealMEConfig(name=name, description=f"MEGC 2019 composite, SMIC-HS {trees[0]} + CASME II {trees[1]} + SAMM; "
                                        "442 clips of the official list, negative / positive / surprise",
                 class_names=labels.MEGC_3, label_map=labels.identity_map(labels.MEGC_3), tree=name,
                 known_emotion_counts=CLASS_TOTALS)
    for name, trees in TREES.items()
]


def _key(dataset: str, subject: str, clip: str) -> tuple[str, str, str]:
    """Matching key: SMIC clip names lose a zero pad after 's' (disk folders may be s1_ne_01 or s01_ne_01)."""
    if dataset == smic.DATASET:
        clip = re.sub(r"^[sS]0*(\d+)", lambda match: f"s{int(match.group(1))}", clip)
    return dataset, subject, clip


def database_clips(manual_dir: Path, config_name: str, quirks: QuirkLog) -> list[ClipSource]:
    """Every clip of the three databases under ``manual_dir`` (the trees of ``config_name``)."""
    smic_tree, casme2_tree = TREES[config_name]
    sources = smic.locate_clips(manual_dir, "hs", smic_tree, False, quirks, DATASET)
    sources += casme2.locate_clips(manual_dir, casme2_tree, quirks, DATASET)[0]
    sources += samm.locate_clips(manual_dir, "raw", quirks, DATASET)
    return sources


class Megc2019(RealMEBuilder):
    """MEGC 2019 composite: the official 442-clip list over SMIC-HS, CASME II and SAMM (3 classes)."""

    BUILDER_CONFIGS = CONFIGS
    LAYOUT = LAYOUT

    def find_clips(self, manual_dir: Path, quirks: QuirkLog) -> list[ClipSource]:
        try:
            found = database_clips(manual_dir, self.builder_config.name, quirks)
        except layout.ManualDirError as error:
            raise layout.ManualDirError(f"{error}\n\nThe {self.name} composite expects:\n{LAYOUT.strip()}") from error
        on_disk = {_key(source.dataset, source.subject, source.clip): source for source in found}
        listed, _ = read_megc_list(LIST_FILE, quirks)
        sources = []
        for row in listed:
            subject, clip = disk_names(row)
            source = on_disk.get(_key(row.dataset, subject, clip))
            where = f"{LIST_FILE.name} line {row.line} ({row.dataset} {row.subject}/{row.clip})"
            if source is None:
                quirks.skipped("listed_clip_missing", where, f"no {row.dataset} clip {subject}/{clip} found")
                continue
            rule = labels.MEGC3_MAP.get(source.emotion.strip().lower())
            if rule != MEGC_LABELS[row.label]:
                quirks.fixed("list_label_differs", where, f"{source.emotion!r} maps to {rule}; the list says "
                                                          f"{MEGC_LABELS[row.label]} (used)")
            sources.append(dataclasses.replace(source, label=row.label))
        return sources
