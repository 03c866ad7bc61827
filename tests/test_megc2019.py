"""The ``megc2019`` composite builder: the official list over fake SMIC, CASME II and SAMM copies."""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import build
from datasets.core.builder import FaceOptions, read_build_report
from datasets.core.sheets import read_megc_list
from datasets.megc2019 import megc2019
from merjax.data import pipeline, protocols, schema
from tests import fake_databases as fake
from tests.fake_sheets import CasmeRow, SammRow, write_casme2_coding, write_samm_codes

FACES = FaceOptions(crop_size=32)


@pytest.fixture(scope="module")
def composite_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("MEGC")
    smic_name = fake.smic_frame_name(cropped=False)
    for emotion, clip in [("negative", "s1_ne_01"), ("positive", "s1_po_01"), ("surprise", "s1_sur_01"),
                          ("negative", "s1_ne_09")]:   # s1_ne_09 is not in the list
        fake.write_frames(fake.smic_clip_folder(root / "SMIC", "s1", emotion, clip), fake.FakeClip(0, range(1, 5)),
                          smic_name)
    casme2 = root / "CASME2"
    for clip in ("EP02_01f", "EP19_05f"):
        fake.write_frames(casme2 / "CASME2_RAW_selected" / "sub01" / clip, fake.FakeClip(2, range(10, 14)),
                          "img{}.jpg")
    write_casme2_coding(casme2 / "CASME2-coding-20190701.xlsx", [
        CasmeRow("01", "EP02_01f", 10, 11, 13, "happiness", "6+12", 1),
        CasmeRow("01", "EP19_05f", 10, 12, 13, "others"),      # the list says negative (0)
    ])
    samm = root / "SAMM"
    fake.write_frames(samm / "SAMM" / "006" / "006_1_2", fake.FakeClip(3, range(5562, 5566)), "006_{:05d}.jpg",
                      grayscale=True)
    write_samm_codes(samm / "SAMM_Micro_FACS_Codes_v2.xlsx",
                     [SammRow("006", "006_1_2", 5562, 5563, 5565, "Anger", "4+L10", 4)])
    return build.build("megc2019/composite", str(tmp_path_factory.mktemp("data")), str(root), faces=FACES)


def test_listed_clips_are_found_across_the_three_databases(composite_dir: str) -> None:
    source = tfds.builder_from_directory(composite_dir).as_data_source(split="train")
    examples = {(schema.decode_text(e["dataset"]), schema.decode_text(e["subject"]), schema.decode_text(e["clip"])):
                e for e in source}
    assert {key: int(e["label"]) for key, e in examples.items()} == {
        ("smic", "s1", "s1_ne_01"): 0, ("smic", "s1", "s1_po_01"): 1, ("smic", "s1", "s1_sur_01"): 2,
        ("casme2", "sub01", "EP02_01f"): 1, ("casme2", "sub01", "EP19_05f"): 0, ("samm", "006", "006_1_2"): 0}
    assert {key: float(e["fps"]) for key, e in examples.items()}[("smic", "s1", "s1_ne_01")] == 100.0
    assert schema.decode_text(examples[("samm", "006", "006_1_2")]["emotion"]) == "Anger"
    assert int(examples[("casme2", "sub01", "EP02_01f")]["apex"]) == 1
    # action units and objective classes from the CASME II and SAMM sheets; SMIC codes none
    assert {key: (schema.decode_text(e["action_units"]), int(e["objective_class"])) for key, e in examples.items()} == {
        ("smic", "s1", "s1_ne_01"): ("", -1), ("smic", "s1", "s1_po_01"): ("", -1),
        ("smic", "s1", "s1_sur_01"): ("", -1), ("casme2", "sub01", "EP02_01f"): ("6+12", 0),
        ("casme2", "sub01", "EP19_05f"): ("4", 6), ("samm", "006", "006_1_2"): ("4+L10", 3)}


def test_missing_and_relabelled_clips_are_counted(composite_dir: str) -> None:
    report = read_build_report(composite_dir)
    quirks = report["quirks"]
    assert quirks["listed_clip_missing"]["count"] == 442 - 6
    assert quirks["list_label_differs"]["count"] == 1
    assert "'others' maps to None; the list says negative" in quirks["list_label_differs"]["examples"][0]
    assert report["class_counts"] == {"negative": 3, "positive": 2, "surprise": 1}
    assert report["expected_counts"] == {"negative": 250, "positive": 109, "surprise": 83}


def test_composite_loso_keeps_databases_apart(composite_dir: str) -> None:
    clip_set = pipeline.load_clips(composite_dir, image_size=16)
    assert sorted(zip(clip_set.clip_ids, clip_set.action_units, clip_set.objective_classes.tolist())) == [
        ("006_1_2", "4+L10", 3), ("EP02_01f", "6+12", 0), ("EP19_05f", "4", 6), ("s1_ne_01", "", -1),
        ("s1_po_01", "", -1), ("s1_sur_01", "", -1)]
    assert clip_set.objective_classes.dtype == np.int32
    folds = protocols.composite_loso(clip_set.datasets, clip_set.subjects, clip_set.labels, val_subjects=0)
    assert sorted(fold.name for fold in folds) == ["loso_casme2/sub01", "loso_samm/006", "loso_smic/s1"]
    for fold in folds:
        assert len(set(clip_set.datasets[fold.test])) == 1


def test_shipped_list_gives_68_subjects_to_composite_loso() -> None:
    listed, blank_lines = read_megc_list(megc2019.LIST_FILE)
    assert (len(listed), blank_lines) == (442, 0)
    folds = protocols.composite_loso([row.dataset for row in listed], [row.subject for row in listed],
                                     [row.label for row in listed], val_subjects=0)
    assert len(folds) == 68
    test_sizes = np.bincount(np.concatenate([fold.test for fold in folds]), minlength=442)
    np.testing.assert_array_equal(test_sizes, np.ones(442))   # every clip is tested exactly once
