"""TFDS builder ``smic``: the Oulu SMIC database (HS, VIS, NIR) from the user's copy.

SMIC ships no annotation sheet: the class is the ``micro/<emotion>`` folder,
each clip folder spans onset..offset, and no apex is given (stored as -1); nor
are action units (``action_units`` '', ``objective_class`` -1).
Frame files carry absolute frame numbers with gaps. Subject folders are
unpadded (``s1``); ``s01`` is accepted and stored as ``s1``. The ``non_micro``
clips are the 4th class of the ``*_4class`` configs (seed 001); their inner
layout is not documented, so any folder under ``non_micro`` holding frames is
one clip. Known totals (reference/datasets.md §1): HS 164 = negative 70,
positive 51, surprise 43 from 16 subjects (s7, s10, s16, s17 have none);
VIS and NIR 71 clips each.
"""

from __future__ import annotations

import re
from pathlib import Path

from datasets.core import layout
from datasets.core.builder import ClipSource, RealMEBuilder, RealMEConfig
from datasets.core.frames import frame_pattern, list_frames
from datasets.core.quirks import QuirkLog
from merjax.data import labels
from merjax.data.protocols import natural_key

DATASET = "smic"
EMOTIONS = ("negative", "positive", "surprise")
NON_MICRO = "non_micro"
CROPPED_PARENT = "smic_all_cropped"
SUBJECT_FOLDER = re.compile(r"^s(\d+)$", re.IGNORECASE)
FRAME = frame_pattern(r"(?:reg_)?(?:image|img)\s*")

# modality -> (folder name, frames per second)
MODALITIES = {"hs": ("HS", 100.0), "vis": ("VIS", 25.0), "nir": ("NIR", 25.0)}
HS_EMOTION_COUNTS = {"negative": 70, "positive": 51, "surprise": 43}
HS_SUBJECTS = ("s1", "s2", "s3", "s4", "s5", "s6", "s8", "s9", "s11", "s12", "s13", "s14", "s15", "s18",
               "s19", "s20")
VIS_NIR_TOTAL = 71

LAYOUT = """
ROOT/HS/s1/micro/negative/s1_ne_01/image000001.bmp ...     (raw tree; also VIS/, NIR/)
ROOT/HS/s1/micro/{negative,positive,surprise}/<clip>/...
ROOT/HS/s1/non_micro/.../<clip>/image######.bmp             (the *_4class configs)
ROOT/SMIC_all_cropped/HS/s1/micro/negative/s1_ne_01/reg_image000001.bmp   (cropped tree)
ROOT may also be the HS (VIS, NIR) folder itself, or hold the tree a few levels down.
"""


def _config(modality: str, tree: str, with_non_micro: bool) -> RealMEConfig:
    folder, fps = MODALITIES[modality]
    name = modality + ("_cropped" if tree == "cropped" else "") + ("_4class" if with_non_micro else "")
    classes = labels.SMIC_4 if with_non_micro else labels.SMIC_3
    known = HS_EMOTION_COUNTS if modality == "hs" else None
    return RealMEConfig(
        name=name,
        description=(f"SMIC-{folder} ({fps:g} fps), {tree} tree, classes {', '.join(classes)}"
                     + ("; non_micro = the clips of non_micro/ (seed 001)" if with_non_micro else "")),
        class_names=classes,
        label_map=labels.identity_map(classes),
        tree=tree,
        known_emotion_counts=known,
        known_total=None if known else VIS_NIR_TOTAL,
    )


CONFIGS = [_config(modality, tree, with_non_micro)
           for modality in MODALITIES for tree in ("raw", "cropped") for with_non_micro in (False, True)]


def _is_modality_tree(folder: Path, name: str, cropped: bool) -> bool:
    """``folder`` is the ``name`` (HS/VIS/NIR) folder of the wanted tree and holds subject folders."""
    if folder.name.upper() != name:
        return False
    if (folder.parent.name.lower() == CROPPED_PARENT) != cropped:
        return False
    return any(child.is_dir() and SUBJECT_FOLDER.match(child.name) for child in folder.iterdir())


def find_tree(manual_dir: Path, modality: str, tree: str) -> Path | None:
    """The HS/VIS/NIR folder of the raw or cropped tree under ``manual_dir``, or None."""
    name = MODALITIES[modality][0]
    return layout.find_dir(manual_dir, lambda folder: _is_modality_tree(folder, name, tree == "cropped"))


def _clip_folders(folder: Path) -> list[Path]:
    """Folders at or below ``folder`` (two levels) that hold frame files: the non_micro clips."""
    found = []
    for candidate in layout.walk_dirs(folder, max_depth=2):
        if candidate != folder and any(FRAME.match(path.name) for path in candidate.iterdir()):
            found.append(candidate)
    return found


def find_clips(root: Path, modality: str, with_non_micro: bool, quirks: QuirkLog) -> list[ClipSource]:
    """Every clip under ``root`` (an HS/VIS/NIR folder), subject by subject in numeric order."""
    fps = MODALITIES[modality][1]
    sources: list[ClipSource] = []
    subjects_with_clips = set()
    subject_folders = sorted(root.iterdir(), key=lambda path: natural_key(path.name))
    for folder in subject_folders:
        match = SUBJECT_FOLDER.match(folder.name)
        if not folder.is_dir() or match is None:
            quirks.skipped("stray_entry", str(root), folder.name)
            continue
        subject = f"s{int(match.group(1))}"
        if subject != folder.name:
            quirks.fixed("padded_subject_folder", f"{DATASET} {folder.name}", f"stored as {subject}")
        groups = [(emotion, folder / "micro" / emotion) for emotion in EMOTIONS]
        if with_non_micro:
            groups.append((NON_MICRO, folder / NON_MICRO))
        clips = []
        for emotion, group in groups:
            if not group.is_dir():
                continue
            clip_folders = _clip_folders(group) if emotion == NON_MICRO else sorted(
                path for path in group.iterdir() if path.is_dir())
            for clip_folder in clip_folders:
                where = f"{DATASET} {subject}/{clip_folder.name}"
                frames = list_frames(clip_folder, FRAME, where, quirks)
                if not frames:
                    quirks.skipped("empty_clip_folder", where, "no frame files")
                    continue
                clips.append(ClipSource(DATASET, subject, clip_folder.name, emotion, tuple(frames), fps))
        micro = folder / "micro"
        if micro.is_dir():
            for child in sorted(micro.iterdir()):
                if child.name not in EMOTIONS:
                    quirks.skipped("unknown_emotion_folder", f"{DATASET} {subject}", f"micro/{child.name}")
        if not clips:
            quirks.fixed("empty_subject_folder", f"{DATASET} {subject}", "no clips; ignored")
        subjects_with_clips.update(source.subject for source in clips)
        sources.extend(clips)
    if modality == "hs":
        for subject in HS_SUBJECTS:
            if subject not in subjects_with_clips:
                quirks.skipped("absent_subject", f"{DATASET} {subject}", "SMIC-HS has clips of this subject; none found")
    return sources


def locate_clips(manual_dir: Path, modality: str, tree: str, with_non_micro: bool, quirks: QuirkLog,
                 builder: str = DATASET) -> list[ClipSource]:
    """The clips of one modality and tree under ``manual_dir``; ManualDirError if there are none."""
    root = find_tree(manual_dir, modality, tree)
    if root is None:
        folder = ("SMIC_all_cropped/" if tree == "cropped" else "") + MODALITIES[modality][0]
        raise layout.manual_dir_error(
            builder, manual_dir, f"no {folder} folder with subject folders (s1, s2, ...) found", LAYOUT)
    sources = find_clips(root, modality, with_non_micro, quirks)
    if not sources:
        raise layout.manual_dir_error(builder, root, "no clip folders with frames found", LAYOUT)
    return sources


class Smic(RealMEBuilder):
    """SMIC micro-expression clips (Oulu): HS 100 fps, VIS/NIR 25 fps, raw or cropped tree."""

    BUILDER_CONFIGS = CONFIGS
    LAYOUT = LAYOUT

    def find_clips(self, manual_dir: Path, quirks: QuirkLog) -> list[ClipSource]:
        config = self.builder_config
        return locate_clips(manual_dir, config.name.split("_")[0], config.tree, NON_MICRO in config.class_names,
                            quirks, self.name)
