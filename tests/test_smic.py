"""The ``smic`` builder on fake SMIC trees with the real naming and the known quirks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import build
from datasets.core.builder import FaceOptions, RealMEBuilder, read_build_report, report_lines
from datasets.core.layout import ManualDirError
from merjax.data import schema
from tests import fake_databases as fake

FACES = FaceOptions(crop_size=32)


def write_smic(root: Path, cropped: bool = False) -> None:
    """Cropped trees hold tight face crops. s1: a clip with a frame gap and a stray file, a non_micro clip whose face appears on frame 2;
    s02 (padded): one corrupt frame;
    s3: a clip without a face; s7: an empty subject folder (as in real copies)."""
    name = fake.smic_frame_name(cropped)
    fake.write_frames(fake.smic_clip_folder(root, "s1", "negative", "s1_ne_01", cropped),
                      fake.FakeClip(0, [1001, 1002, 1004, 1005, 1006], tight=cropped), name)
    po = fake.smic_clip_folder(root, "s1", "positive", "s1_po_01", cropped)
    fake.write_frames(po, fake.FakeClip(0, range(2000, 2005), tight=cropped), name)
    (po / "notes.txt").write_text("stray")
    (po / "Thumbs.db").write_bytes(b"\0")
    fake.write_frames(fake.smic_clip_folder(root, "s1", "non_micro", "s1_nm_01", cropped),
                      fake.FakeClip(0, range(10, 14), faceless_first=2), name)
    paths = fake.write_frames(fake.smic_clip_folder(root, "s02", "surprise", "s2_sur_01", cropped),
                              fake.FakeClip(1, range(500, 506), tight=cropped), name)
    fake.corrupt(paths[2])
    fake.write_frames(fake.smic_clip_folder(root, "s3", "negative", "s3_ne_01", cropped),
                      fake.FakeClip(2, range(1, 5), blank=True), name)
    (root / ("SMIC_all_cropped/HS" if cropped else "HS") / "s7").mkdir()



@pytest.fixture(scope="module")
def smic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("SMIC")
    write_smic(root)
    return root


@pytest.fixture(scope="module")
def hs_4class_dir(smic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build.build("smic/hs_4class", str(tmp_path_factory.mktemp("data")), str(smic_root), faces=FACES)


def test_clips_labels_and_ids(hs_4class_dir: str) -> None:
    examples = fake.read_examples(hs_4class_dir)
    assert sorted(examples) == ["s1_ne_01", "s1_nm_01", "s1_po_01", "s2_sur_01"]
    names = tfds.builder_from_directory(hs_4class_dir).info.features["label"].names
    assert names == ["negative", "positive", "surprise", "non_micro"]
    assert {clip: names[int(e["label"])] for clip, e in examples.items()} == {
        "s1_ne_01": "negative", "s1_nm_01": "non_micro", "s1_po_01": "positive", "s2_sur_01": "surprise"}
    assert schema.decode_text(examples["s2_sur_01"]["subject"]) == "s2"   # the padded folder s02
    assert {schema.decode_text(e["dataset"]) for e in examples.values()} == {"smic"}


def test_frames_span_the_readable_frames_with_no_apex(hs_4class_dir: str) -> None:
    examples = fake.read_examples(hs_4class_dir)
    lengths = {clip: len(e["frames"]) for clip, e in examples.items()}
    # 5 frames around a gap; 6 frames minus the corrupt one
    assert lengths == {"s1_ne_01": 5, "s1_nm_01": 4, "s1_po_01": 5, "s2_sur_01": 5}
    for clip, example in examples.items():
        schema.validate(example, where=clip)
        assert example["frames"].shape[1:] == (32, 32, 3)
        assert (int(example["onset"]), int(example["apex"]), int(example["offset"])) == (0, -1, lengths[clip] - 1)
        assert float(example["fps"]) == 100.0
        # SMIC codes no action units
        assert (schema.decode_text(example["action_units"]), int(example["objective_class"])) == ("", -1)


def test_landmarks_are_on_the_face_in_the_crop(hs_4class_dir: str) -> None:
    for clip, example in fake.read_examples(hs_4class_dir).items():
        landmarks = example["landmarks"]
        np.testing.assert_array_equal(landmarks, np.repeat(landmarks[:1], len(landmarks), axis=0))
        first = landmarks[0]
        assert first.min() >= 0 and first.max() <= 32, clip
        eyes, mouth = first[36:48].mean(0), first[48:68].mean(0)
        assert eyes[1] < mouth[1], clip           # eyes above the mouth
        assert 8 < first[:, 0].mean() < 24, clip  # the face is centred by the crop box


def test_every_quirk_is_counted(hs_4class_dir: str) -> None:
    quirks = read_build_report(hs_4class_dir)["quirks"]
    counts = {kind: (entry["action"], entry["count"]) for kind, entry in quirks.items()}
    assert counts == {
        "absent_subject": ("skipped", 13),       # 16 SMIC-HS subjects, 3 with clips here
        "corrupt_frame": ("skipped", 1),
        "empty_subject_folder": ("fixed", 1),    # s7
        "face_found_late": ("fixed", 1),         # s1_nm_01
        "frame_gap": ("fixed", 1),
        "no_face": ("skipped", 1),               # s3_ne_01
        "padded_subject_folder": ("fixed", 1),   # s02
        "stray_file": ("skipped", 1),            # notes.txt (Thumbs.db is ignored)
    }
    assert "s1_ne_01" in quirks["frame_gap"]["examples"][0] and "1 frame number(s)" in quirks["frame_gap"]["examples"][0]


def test_counts_are_checked_against_smic_hs(hs_4class_dir: str) -> None:
    report = read_build_report(hs_4class_dir)
    assert report["class_counts"] == {"negative": 1, "positive": 1, "surprise": 1, "non_micro": 1}
    assert report["expected_counts"] == {"negative": 70, "positive": 51, "surprise": 43}
    assert report["count_differences"] == [
        "negative: 1 written, 70 expected (-69)", "positive: 1 written, 51 expected (-50)",
        "surprise: 1 written, 43 expected (-42)", "total: 3 written, 164 expected (-161)"]
    text = "\n".join(report_lines(report))
    assert "DIFFERS" in text and "not checked (no known total): non_micro" in text
    assert report["faces"] == {"crop_size": 32, "margin": 0.1, "every_frame_landmarks": False, "detector": "dlib",
                               "detector_weights": "", "detector_upsample": 1, "max_face_tries": 5,
                               "full_frame": False}


def test_three_class_config_leaves_non_micro_out_and_overwrite_rebuilds(smic_root: Path, tmp_path: Path) -> None:
    dataset_dir = build.build("smic/hs", str(tmp_path), str(smic_root), faces=FACES)
    assert sorted(fake.read_examples(dataset_dir)) == ["s1_ne_01", "s1_po_01", "s2_sur_01"]
    (smic_root / "HS" / "s1" / "micro" / "positive" / "s1_po_01").rename(tmp_path / "moved_away")
    try:
        assert build.build("smic/hs", str(tmp_path), str(smic_root), overwrite=True, faces=FACES) == dataset_dir
        assert sorted(fake.read_examples(dataset_dir)) == ["s1_ne_01", "s2_sur_01"]
    finally:
        (tmp_path / "moved_away").rename(smic_root / "HS" / "s1" / "micro" / "positive" / "s1_po_01")


def test_cropped_tree_with_every_frame_landmarks(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    write_smic(root, cropped=True)
    faces = FaceOptions(crop_size=32, every_frame_landmarks=True)
    dataset_dir = build.build("smic/hs_cropped", str(tmp_path / "data"), str(root), faces=faces)
    examples = fake.read_examples(dataset_dir)
    assert sorted(examples) == ["s1_ne_01", "s1_po_01", "s2_sur_01"]
    # tight crops: HOG finds some of these faces only in frames padded with a border (counted)
    assert fake.quirk_counts(dataset_dir)["face_found_with_border"][1] >= 1
    landmarks = examples["s1_po_01"]["landmarks"]
    # the fake face drifts by up to 2 canvas pixels per frame, so per-frame landmarks move
    assert np.abs(landmarks - landmarks[:1]).max() > 0.1
    # the raw tree is not mistaken for the cropped one and vice versa
    with pytest.raises(ManualDirError, match="no HS folder"):
        build.build("smic/hs", str(tmp_path / "data2"), str(root), faces=FACES)


def test_empty_or_wrong_manual_dir_shows_the_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManualDirError, match="does not exist or is empty") as error:
        build.build("smic/hs", str(tmp_path / "data"), str(tmp_path / "empty"), faces=FACES)
    assert "SMIC_all_cropped/HS/s1/micro/negative/s1_ne_01/reg_image" in str(error.value)
    (tmp_path / "wrong" / "CASME2").mkdir(parents=True)
    with pytest.raises(ManualDirError, match="no HS folder") as error:
        build.build("smic/hs", str(tmp_path / "data"), str(tmp_path / "wrong"), faces=FACES)
    assert "CASME2/" in str(error.value)   # what is there instead


def test_ensure_built_refuses_other_face_options(hs_4class_dir: str, smic_root: Path) -> None:
    data_dir = str(Path(hs_4class_dir).parents[2])
    assert build.ensure_built("smic/hs_4class", data_dir, str(smic_root), faces=FACES) == hs_4class_dir
    with pytest.raises(ValueError, match="built with face options"):
        build.ensure_built("smic/hs_4class", data_dir, str(smic_root), faces=FaceOptions(crop_size=48))


def test_cli_prints_the_build_report_and_the_dataset_dir(smic_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    build.main(["smic/hs", f"--data_dir={tmp_path}", f"--manual_dir={smic_root}", "--crop_size=32"])
    out = capsys.readouterr().out
    assert "clips found: 4; written: 3 (negative 1, positive 1, surprise 1)" in out
    assert "count check: DIFFERS" in out and "fixed    frame_gap x1" in out and "skipped  no_face x1" in out
    assert out.strip().splitlines()[-1] == str(tmp_path / "smic" / "hs" / str(RealMEBuilder.VERSION))


@pytest.mark.parametrize("options,message", [
    (dict(detector="fan"), "needs detector_weights"),
    (dict(detector_upsample=-1), "detector_upsample must be >= 0"),
    (dict(margin=1.5), "margin must lie in"),
    (dict(crop_size=4), "crop_size must be at least 8"),
])
def test_face_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaceOptions(**options)
