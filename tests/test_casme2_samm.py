"""The ``casme2`` and ``samm`` builders on fake trees with real naming and sheets in the real layouts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import build
from datasets.core.builder import FaceOptions, read_build_report
from datasets.casme2 import casme2
from datasets.core import coded
from datasets.core.layout import ManualDirError
from datasets.core.quirks import QuirkLog
from datasets.core.sheets import read_casme2_coding
from merjax import stamps
from merjax.data import schema
from merjax.errors import UserError
from tests import fake_databases as fake
from tests.fake_sheets import CasmeRow, SammRow, write_casme2_coding, write_samm_codes

FACES = FaceOptions(crop_size=32)

CASME_ROWS = [
    CasmeRow("01", "EP02_01f", 46, 48, 50, "happiness", 12, 1),
    CasmeRow("01", "EP19_05f", 10, "/", 14, "disgust", "4+7+L10", 4),   # apex '/'
    CasmeRow("02", "EP01_11f", 20, 23, 25, "repression", "14"),       # frame 23 missing on disk
    CasmeRow("02", "EP03_02", 5, 9, 9, "others", "R1"),               # apex == offset is valid
    CasmeRow("03", "EP01_2", 1, 2, 4, "fear", "4"),                   # not one of the 5 classes
    CasmeRow("04", "EP12_01f", 1, 2, 3, "disgust", "4"),              # listed, no folder
    CasmeRow("05", "EP05_01", 30, 31, 33, "surprise", "1+2"),         # folder sub5 (unpadded)
]
# subject folder, clip, frame numbers on disk
CASME_FOLDERS = [
    ("sub01", "EP02_01f", [46, 47, 48, 49, 50]), ("sub01", "EP19_05f", [10, 11, 12, 13, 14]),
    ("sub02", "EP01_11f", [20, 21, 22, 24, 25]), ("sub02", "EP03_02", [5, 6, 7, 8, 9]),
    ("sub03", "EP01_2", [1, 2, 3, 4]), ("sub5", "EP05_01", [29, 30, 31, 32, 33, 34]),
    ("sub02", "EP09_09", [1, 2, 3]),                                  # not in the sheet
]


def write_casme2(root: Path, cropped: bool = False) -> None:
    tree = root / "Cropped-updated" / "Cropped" if cropped else root / "CASME2_RAW_selected"
    name = "reg_img{}.jpg" if cropped else "img{}.jpg"
    for index, (subject, clip, numbers) in enumerate(CASME_FOLDERS):
        paths = fake.write_frames(tree / subject / clip, fake.FakeClip(index % 3, numbers, tight=cropped), name)
        if clip == "EP03_02":
            fake.corrupt(paths[1])
    (tree / "sub01" / "Desktop - Shortcut.lnk").write_bytes(b"lnk")
    write_casme2_coding(root / "CASME2-coding-20190701.xlsx", CASME_ROWS)




@pytest.fixture(scope="module")
def casme2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("CASME2")
    write_casme2(root)
    return root


@pytest.fixture(scope="module")
def casme2_dir(casme2_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build.build("casme2/raw", str(tmp_path_factory.mktemp("data")), str(casme2_root), faces=FACES)


def test_casme2_clips_spans_and_apexes(casme2_dir: str) -> None:
    examples = fake.read_examples(casme2_dir)
    assert sorted(examples) == ["EP01_11f", "EP02_01f", "EP03_02", "EP05_01", "EP19_05f"]
    names = tfds.builder_from_directory(casme2_dir).info.features["label"].names
    assert names == ["happiness", "disgust", "repression", "surprise", "others"]
    spans = {clip: (len(e["frames"]), int(e["onset"]), int(e["apex"]), int(e["offset"]))
             for clip, e in examples.items()}
    assert spans == {
        "EP02_01f": (5, 0, 2, 4),     # 46..50, apex 48
        "EP19_05f": (5, 0, -1, 4),    # apex '/'
        "EP01_11f": (5, 0, 2, 4),     # 20 21 22 24 25: apex 23 -> nearest read frame 22
        "EP03_02": (4, 0, 3, 3),      # corrupt frame 6 left out; apex 9 == offset
        "EP05_01": (4, 0, 1, 3),      # disk 29..34 trimmed to the sheet's 30..33, apex 31
    }
    assert {clip: names[int(e["label"])] for clip, e in examples.items()} == {
        "EP02_01f": "happiness", "EP19_05f": "disgust", "EP01_11f": "repression", "EP03_02": "others",
        "EP05_01": "surprise"}
    assert schema.decode_text(examples["EP02_01f"]["subject"]) == "sub01"
    assert float(examples["EP02_01f"]["fps"]) == 200.0
    # the sheet's Action Units as written (a numeric cell 12 as '12') and Objective Classes 1..7 as 0..6
    assert {clip: (schema.decode_text(e["action_units"]), int(e["objective_class"]))
            for clip, e in examples.items()} == {
        "EP02_01f": ("12", 0), "EP19_05f": ("4+7+L10", 3), "EP01_11f": ("14", 6), "EP03_02": ("R1", 6),
        "EP05_01": ("1+2", 6)}


def test_casme2_quirks_and_count_check(casme2_dir: str) -> None:
    assert fake.quirk_counts(casme2_dir) == {
        "apex_frame_missing": ("fixed", 1),
        "apex_missing": ("fixed", 1),
        "corrupt_frame": ("skipped", 1),
        "excluded_emotion": ("skipped", 1),          # fear
        "frame_gap": ("fixed", 1),
        "missing_clip_folder": ("skipped", 1),       # sub04/EP12_01f
        "stray_file": ("skipped", 1),                # Desktop - Shortcut.lnk
        "subject_folder_renamed": ("fixed", 1),      # sub5
        "trimmed_to_onset_offset": ("fixed", 1),     # sub5/EP05_01 holds 29..34
        "unlisted_clip_folder": ("skipped", 1),      # sub02/EP09_09
    }
    report = read_build_report(casme2_dir)
    # the 20190701 release's emotion counts (reference §2.4) through the 5-class map
    assert report["expected_counts"] == {"happiness": 32, "disgust": 63, "repression": 27, "surprise": 28,
                                         "others": 99}
    assert "total: 5 written, 249 expected (-244)" in report["count_differences"]


def test_casme2_four_class_and_cropped_tree_with_two_sheet_releases(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    write_casme2(root, cropped=True)
    write_casme2_coding(root / "CASME2-coding-20140508.xlsx", CASME_ROWS, release="20140508")
    dataset_dir = build.build("casme2/cropped_4class", str(tmp_path / "data"), str(root), faces=FACES)
    examples = fake.read_examples(dataset_dir)
    names = ["negative", "positive", "surprise", "others"]
    assert {clip: names[int(e["label"])] for clip, e in examples.items()} == {
        "EP02_01f": "positive", "EP19_05f": "negative", "EP01_11f": "negative", "EP03_02": "others",
        "EP01_2": "negative", "EP05_01": "surprise"}
    report = read_build_report(dataset_dir)
    assert "used CASME2-coding-20190701.xlsx" in report["quirks"]["several_coding_sheets"]["examples"][0]
    assert report["expected_counts"] == {"negative": 63 + 27 + 4 + 2, "positive": 32, "surprise": 28,
                                         "others": 99}


def test_casme2_20140508_sheet_keeps_action_units_without_objective_classes(casme2_root: Path,
                                                                            tmp_path: Path) -> None:
    sheet = write_casme2_coding(tmp_path / "CASME2-coding-20140508.xlsx", CASME_ROWS, release="20140508")
    sources = coded.sheet_clips(read_casme2_coding(sheet, QuirkLog()), casme2_root / "CASME2_RAW_selected",
                                 casme2.TREES["raw"][1], "casme2", casme2.FPS, QuirkLog())
    assert {source.clip: (source.action_units, source.objective_class) for source in sources} == {
        "EP02_01f": ("12", -1), "EP19_05f": ("4+7+L10", -1), "EP01_11f": ("14", -1), "EP03_02": ("R1", -1),
        "EP01_2": ("4", -1), "EP05_01": ("1+2", -1)}


def test_casme2_without_sheet_names_it(tmp_path: Path) -> None:
    fake.write_frames(tmp_path / "CASME2_RAW_selected" / "sub01" / "EP02_01f", fake.FakeClip(0, [1, 2]), "img{}.jpg")
    with pytest.raises(ManualDirError, match="no CASME2-coding-\\*.xlsx sheet found") as error:
        build.build("casme2/raw", str(tmp_path / "data"), str(tmp_path), faces=FACES)
    assert "CASME2_RAW_selected/sub01/EP02_01f/img46.jpg" in str(error.value)


SAMM_ROWS = [
    SammRow("006", "006_1_2", 5562, 5564, 5566, "Anger", "4+7", 3),
    SammRow("007", "007_3_1", 100, 103, 104, "Happiness", "6+12", 1),
    SammRow("028", "028_4_1", 1130, 1143, 1134, "Contempt", "(R6 or R12)+R15"),   # apex > offset, as in the sheet
    SammRow("025", "025_1_1", 10, 11, 12, "Other"),
]


def write_samm(root: Path, release: str) -> None:
    tree = root / "SAMM"
    # rendered identities 1 and 4 are not found on their first grayscale JPEG frame: 0, 2, 3, 5 are
    for index, (subject, clip, numbers, digits) in zip((0, 2, 3, 5), [
            ("006", "006_1_2", range(5562, 5567), 5), ("007", "007_3_1", range(100, 105), 4),
            ("028", "028_4_1", range(1130, 1135), 4), ("025", "025_1_1", range(10, 13), 4)]):
        fake.write_frames(tree / subject / clip, fake.FakeClip(index, list(numbers)),
                          f"{subject}_{{:0{digits}d}}.jpg", grayscale=True)
    name = "SAMM_Micro_FACS_Codes_v2.xlsx" if release == "v2" else "SAMM_20181215_Micro_FACS_Codes_v2.xlsx"
    write_samm_codes(root / name, SAMM_ROWS, release=release)


@pytest.mark.parametrize("release", ["v2", "20181215"])
def test_samm_both_sheet_releases_grayscale_as_three_channels(tmp_path: Path, release: str) -> None:
    write_samm(tmp_path / "copy", release)
    dataset_dir = build.build("samm/raw_megc3", str(tmp_path / "data"), str(tmp_path / "copy"), faces=FACES)
    examples = fake.read_examples(dataset_dir)
    assert sorted(examples) == ["006_1_2", "007_3_1", "028_4_1"]          # 'Other' is not in MEGC's 3 classes
    names = ["negative", "positive", "surprise"]
    assert {clip: names[int(e["label"])] for clip, e in examples.items()} == {
        "006_1_2": "negative", "007_3_1": "positive", "028_4_1": "negative"}
    assert {clip: int(e["apex"]) for clip, e in examples.items()} == {"006_1_2": 2, "007_3_1": 3, "028_4_1": -1}
    assert {clip: (schema.decode_text(e["action_units"]), int(e["objective_class"]))
            for clip, e in examples.items()} == {
        "006_1_2": ("4+7", 2), "007_3_1": ("6+12", 0), "028_4_1": ("(R6 or R12)+R15", 6)}
    for example in examples.values():
        frames = example["frames"]
        np.testing.assert_array_equal(frames[..., 0], frames[..., 1])
        np.testing.assert_array_equal(frames[..., 1], frames[..., 2])
    assert schema.decode_text(examples["006_1_2"]["subject"]) == "006"
    assert fake.quirk_counts(dataset_dir) == {"apex_outside": ("fixed", 1), "excluded_emotion": ("skipped", 1)}
    assert read_build_report(dataset_dir)["expected_counts"] == {"negative": 92, "positive": 26, "surprise": 15}


def test_a_copy_is_refused_once_its_coding_sheet_changes(tmp_path: Path) -> None:
    root = tmp_path / "CASME2"
    write_casme2(root)
    data_dir = str(tmp_path / "data")
    built = build.build("casme2/raw", data_dir, str(root), faces=FACES)
    sheet = root / "CASME2-coding-20190701.xlsx"
    assert read_build_report(built)["annotations"] == {str(sheet): stamps.digest_file(sheet)}
    assert build.ensure_built("casme2/raw", data_dir, str(root), FACES) == built   # unchanged: reused
    relabelled = [row if row.clip != "EP02_01f" else dataclasses.replace(row, emotion="surprise")
                  for row in CASME_ROWS]
    write_casme2_coding(sheet, relabelled)
    with pytest.raises(UserError, match=rf"{sheet} changed since the build.*--overwrite"):
        build.ensure_built("casme2/raw", data_dir, str(root), FACES)
