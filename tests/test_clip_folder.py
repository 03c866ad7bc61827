"""The ``clip_folder`` builder on a researcher-style tree: frame folders and videos listed in labels.csv."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import build
from datasets.clip_folder import clip_folder
from datasets.core.builder import FaceOptions, RealMEBuilder, read_build_report
from datasets.core.layout import ManualDirError
from datasets.core.quirks import QuirkLog
from merjax.data import pipeline, schema
from merjax.errors import UserError
from tests import fake_databases as fake

FACES = FaceOptions(crop_size=32)
FRAME = "frame_{:04d}.png"

CSV = """\
Subject, Clip ,Label,Onset,Apex,Offset,FPS,notes,Action_Units,objective_class
s1,c1,positive,1001,1004,1006,200,folder under its subject,6+12,1
s2,c2,negative,,,,,flat folder without fps,,-1
s2,v1,surprise,,2,,,video under its subject: the container's fps,L1+R2, II
s3,v2.avi,negative,1,3,4,100,flat video named with its suffix; 0 and 5 trimmed,"AU4, AU7",
,,,,,,,
s1,c1,surprise,,,,,duplicate of line 2
s4,gone,positive,,,,,missing
s1,c3,positive,2,9,5,200,apex outside onset..offset
s3,bad,negative,,,,,unreadable video
s5,blank,positive,,,,30,no face
s7,empty,positive,,,,30,empty folder
s6,c2,negative,,,,,same folder as line 3
s2,c5,positive,,-1,,50,folder and video: the folder is used
"""


def write_tree(root: Path) -> None:
    (root / "labels.csv").write_text(CSV)
    fake.write_frames(root / "s1" / "c1", fake.FakeClip(0, range(1001, 1007)), FRAME)
    (root / "s1" / "c1" / "notes.txt").write_text("stray")
    fake.write_frames(root / "c2", fake.FakeClip(1, range(1, 6)), "s2_take2_{}.png")   # the last number counts
    assert fake.write_video(root / "s2" / "v1.avi", 1, 6, fps=25.0) == 6
    assert fake.write_video(root / "v2.avi", 2, 6, fps=30.0) == 6
    fake.write_frames(root / "s1" / "c3", fake.FakeClip(0, range(1, 7)), FRAME)
    (root / "s3").mkdir()
    (root / "s3" / "bad.avi").write_bytes(b"not a video" * 50)
    fake.write_frames(root / "s5" / "blank", fake.FakeClip(3, range(4), blank=True), FRAME)
    (root / "s7" / "empty").mkdir(parents=True)
    fake.write_frames(root / "s2" / "c5", fake.FakeClip(1, range(10, 13)), FRAME)
    (root / "s2" / "c5.avi").write_bytes(b"\0")
    fake.write_frames(root / "s1" / "extra", fake.FakeClip(0, range(3)), FRAME)   # unlisted
    (root / "stray.mkv").write_bytes(b"\0")                                          # unlisted
    (root / "README.txt").write_text("not a clip")



@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("my_me")
    write_tree(root)
    return build.build("clip_folder", str(tmp_path_factory.mktemp("data")), str(root), faces=FACES)


def test_clips_labels_and_ids_follow_the_csv(dataset_dir: str) -> None:
    examples = fake.read_examples(dataset_dir)
    assert sorted(examples) == ["c1", "c2", "c3", "c5", "v1", "v2.avi"]
    names = tfds.builder_from_directory(dataset_dir).info.features["label"].names
    assert names == ["negative", "positive", "surprise"]   # sorted labels of the accepted rows
    labels = {clip: names[int(e["label"])] for clip, e in examples.items()}
    assert labels == {"c1": "positive", "c2": "negative", "c3": "positive", "c5": "positive", "v1": "surprise",
                      "v2.avi": "negative"}
    assert {clip: schema.decode_text(e["emotion"]) for clip, e in examples.items()} == labels
    subjects = {clip: schema.decode_text(e["subject"]) for clip, e in examples.items()}
    assert subjects == {"c1": "s1", "c2": "s2", "c3": "s1", "c5": "s2", "v1": "s2", "v2.avi": "s3"}
    assert {schema.decode_text(e["dataset"]) for e in examples.values()} == {"clip_folder"}


def test_spans_apexes_and_fps(dataset_dir: str) -> None:
    examples = fake.read_examples(dataset_dir)
    got = {clip: (len(e["frames"]), int(e["onset"]), int(e["apex"]), int(e["offset"]), float(e["fps"]))
           for clip, e in examples.items()}
    assert got == {
        "c1": (6, 0, 3, 5, 200.0),    # apex frame 1004 of 1001..1006
        "c2": (5, 0, -1, 4, 0.0),     # no fps anywhere: 0.0
        "c3": (4, 0, -1, 3, 200.0),   # frames 2..5; apex 9 outside onset..offset
        "c5": (3, 0, -1, 2, 50.0),    # apex -1 = unknown
        "v1": (6, 0, 2, 5, 25.0),     # video apex index 2; fps from the container
        "v2.avi": (4, 0, 2, 3, 100.0),  # indices 1..4, apex 3; the CSV fps overrides the container's 30
    }
    for clip, example in examples.items():
        schema.validate(example, where=clip)
        assert example["frames"].shape[1:] == (32, 32, 3)
        first = example["landmarks"][0]
        assert first.min() >= 0 and first.max() <= 32, clip
        assert first[36:48].mean(0)[1] < first[48:68].mean(0)[1], clip   # eyes above the mouth


def test_action_units_as_written_and_objective_classes_from_the_optional_columns(dataset_dir: str) -> None:
    examples = fake.read_examples(dataset_dir)
    assert {clip: (schema.decode_text(e["action_units"]), int(e["objective_class"]))
            for clip, e in examples.items()} == {
        "c1": ("6+12", 0), "c2": ("", -1), "v1": ("L1+R2", 1), "v2.avi": ("AU4, AU7", -1),
        "c3": ("", -1), "c5": ("", -1)}   # short rows: no cells for the two columns


def test_without_the_optional_columns_action_units_are_unknown(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    _write_small_tree(root)
    clip_set = pipeline.load_clips(build.build("clip_folder", str(tmp_path / "data"), str(root), faces=FACES), 16)
    assert clip_set.action_units.tolist() == ["", "", ""] and clip_set.objective_classes.tolist() == [-1, -1, -1]


@pytest.mark.parametrize("cell", ["0", "8", "VIII", "6+12", "2.5"])
def test_bad_objective_class_names_file_line_and_value(tmp_path: Path, cell: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(f"subject,clip,label,objective_class\ns0,z,sad,7\ns1,a,happy,{cell}\n")
    with pytest.raises(UserError) as error:
        clip_folder.read_labels_csv(path, QuirkLog())
    assert str(error.value) == (f"{path} line 3: objective_class {cell!r} is not an objective class "
                                "(1..7 or I..VII; empty or -1 = unknown)")


def test_video_frames_are_rgb(dataset_dir: str) -> None:
    examples = fake.read_examples(dataset_dir)
    # the same rendered subject as a PNG folder (c5: subject 1) and as a video (v1): colours agree, not swapped
    folder, video = examples["c5"]["frames"][0].astype(float), examples["v1"]["frames"][0].astype(float)
    channel_means = folder.mean((0, 1)), video.mean((0, 1))
    assert np.argsort(channel_means[0]).tolist() == np.argsort(channel_means[1]).tolist()


def test_every_quirk_is_counted(dataset_dir: str) -> None:
    report = read_build_report(dataset_dir)
    counts = {kind: (entry["action"], entry["count"]) for kind, entry in report["quirks"].items()}
    assert counts == {
        "ambiguous_clip": ("fixed", 1),            # s2/c5/ and s2/c5.avi
        "apex_outside": ("fixed", 1),              # c3
        "blank_row": ("fixed", 1),
        "clip_used_twice": ("skipped", 1),         # s6,c2 -> c2/ of s2
        "duplicate_row": ("skipped", 1),           # s1,c1 again
        "empty_clip_folder": ("skipped", 1),       # s7/empty
        "fps_unknown": ("fixed", 1),               # c2
        "missing_clip": ("skipped", 1),            # s4/gone
        "no_face": ("skipped", 1),                 # s5/blank
        "stray_file": ("skipped", 1),              # s1/c1/notes.txt
        "trimmed_to_onset_offset": ("fixed", 2),   # c3, v2.avi
        "unlisted_clip": ("skipped", 2),           # s1/extra, stray.mkv
        "unreadable_video": ("skipped", 1),        # s3/bad.avi
    }
    assert "line 7 repeats line 2" in report["quirks"]["duplicate_row"]["examples"][0]
    assert report["class_counts"] == {"negative": 2, "positive": 3, "surprise": 1}
    assert report["count_differences"] is None
    assert report["csv"].endswith("labels.csv")


def test_reopened_builder_keeps_the_class_names(dataset_dir: str) -> None:
    data_dir = str(Path(dataset_dir).parents[2])
    builder = build.make_builder("clip_folder", data_dir, FACES)
    assert builder.is_prepared()
    assert builder.info.features["label"].names == ["negative", "positive", "surprise"]


def test_overwrite_with_other_classes(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    fake.write_frames(root / "a", fake.FakeClip(0, range(3)), FRAME)
    (root / "labels.csv").write_text("subject,clip,label\ns1,a,happy\n")
    data_dir = str(tmp_path / "data")
    build.build("clip_folder", data_dir, str(root), faces=FACES)
    (root / "labels.csv").write_text("subject,clip,label,fps\ns1,a,sad,10\n")
    # a builder made over the prepared copy restores its class names; regenerating replaces them
    assert build.make_builder("clip_folder", data_dir, FACES).info.features["label"].names == ["happy"]
    dataset_dir = build.build("clip_folder", data_dir, str(root), overwrite=True, faces=FACES)
    assert tfds.builder_from_directory(dataset_dir).info.features["label"].names == ["sad"]
    assert float(fake.read_examples(dataset_dir)["a"]["fps"]) == 10.0


def test_csv_found_one_level_down(tmp_path: Path) -> None:
    root = tmp_path / "copy" / "release"
    fake.write_frames(root / "s1" / "a", fake.FakeClip(0, range(3)), FRAME)
    (root / "LABELS.csv").write_text("subject,clip,label\ns1,a,happy\n")
    assert clip_folder.find_csv(tmp_path / "copy") == root / "LABELS.csv"


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    fake.write_frames(root / "a", fake.FakeClip(0, range(3)), FRAME)
    (root / "labels.csv").write_text("subject,clip,emotion\ns1,a,happy\n")
    with pytest.raises(ValueError, match=r"labels\.csv line 1: missing required column\(s\) label") as error:
        build.build("clip_folder", str(tmp_path / "data"), str(root), faces=FACES)
    assert str(root / "labels.csv") in str(error.value)
    (root / "labels.csv").write_text("subject;clip;label\ns1;a;happy\n")
    with pytest.raises(ValueError, match="comma separated"):
        clip_folder.read_labels_csv(root / "labels.csv", QuirkLog())


@pytest.mark.parametrize("row, message", [
    ("s1,a,happy,abc,,", r"line 3: onset 'abc' is not a frame number"),
    ("s1,a,happy,,2.5,", r"line 3: apex '2.5' is not a frame number"),
    ("s1,a,happy,5,,2", r"line 3: onset 5 is after offset 2"),
    ("s1,,happy,,,", r"line 3: empty clip cell"),
    ("s1,a,happy,,,,x", r"line 3: 7 cells but the header has 6"),
])
def test_bad_value_names_file_line_and_value(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(f"subject,clip,label,onset,apex,offset\ns0,z,sad,1.0,,\n{row}\n")
    with pytest.raises(ValueError, match=message) as error:
        clip_folder.read_labels_csv(path, QuirkLog())
    assert str(path) in str(error.value)


def test_bad_onset_fails_the_build(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    fake.write_frames(root / "a", fake.FakeClip(0, range(3)), FRAME)
    (root / "labels.csv").write_text("subject,clip,label,onset\ns1,a,happy,first\n")
    with pytest.raises(ValueError, match=r"labels\.csv line 2: onset 'first'"):
        build.build("clip_folder", str(tmp_path / "data"), str(root), faces=FACES)


def test_empty_or_wrong_manual_dir_shows_the_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManualDirError, match="does not exist or is empty") as error:
        build.build("clip_folder", str(tmp_path / "data"), str(tmp_path / "empty"), faces=FACES)
    assert "ROOT/labels.csv" in str(error.value)
    assert "subject,clip,label[,onset,apex,offset,fps,action_units,objective_class]" in str(error.value)
    fake.write_frames(tmp_path / "no_csv" / "s1" / "a", fake.FakeClip(0, range(2)), FRAME)
    with pytest.raises(ManualDirError, match="no labels.csv found") as error:
        build.build("clip_folder", str(tmp_path / "data"), str(tmp_path / "no_csv"), faces=FACES)
    assert "s1/" in str(error.value)   # what is there instead
    (tmp_path / "no_csv" / "labels.csv").write_text("subject,clip,label\ns9,zz,happy\n")
    with pytest.raises(ManualDirError, match="none of the 1 clips listed in labels.csv was found"):
        build.build("clip_folder", str(tmp_path / "data"), str(tmp_path / "no_csv"), faces=FACES)


# --------------------------------------------------------------------------- #
# The stamp: a prepared copy is reused only while what it was read from is unchanged.
# --------------------------------------------------------------------------- #

SMALL_CSV = "subject,clip,label\ns1,a,happy\ns2,b,sad\ns2,c,sad\n"


def _write_small_tree(root: Path) -> None:
    for index, (subject, clip) in enumerate((("s1", "a"), ("s2", "b"), ("s2", "c"))):
        fake.write_frames(root / subject / clip, fake.FakeClip(index, range(3)), FRAME)
    (root / "labels.csv").write_text(SMALL_CSV)


def _refusal(data_dir: str, manual_dir: Path | None) -> str:
    with pytest.raises(UserError) as error:
        build.ensure_built("clip_folder", data_dir, None if manual_dir is None else str(manual_dir), FACES)
    message = str(error.value)
    assert "\n" not in message and "does not match" in message
    return message


def _rebuild_command(message: str) -> str:
    return message.split("rebuild it: ")[1].split(" (or use another data_dir)")[0]


def test_the_build_report_stamps_the_csv_and_each_clips_files(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    _write_small_tree(root)
    dataset_dir = build.build("clip_folder", str(tmp_path / "data"), str(root), faces=FACES)
    stamp = read_build_report(dataset_dir)["stamp"]
    assert stamp["csv"] == str((root / "labels.csv").resolve())
    assert stamp["csv_sha256"] == hashlib.sha256(SMALL_CSV.encode()).hexdigest()
    assert sorted(stamp["clips"]) == ["s1/a", "s2/b", "s2/c"] and len(set(stamp["clips"].values())) == 3


def test_a_changed_csv_refuses_the_copy_and_the_named_command_rebuilds_it(tmp_path: Path) -> None:
    root, data_dir = tmp_path / "mine", str(tmp_path / "data")
    _write_small_tree(root)
    dataset_dir = build.ensure_built("clip_folder", data_dir, str(root), FACES)
    assert build.ensure_built("clip_folder", data_dir, str(root), FACES) == dataset_dir    # unchanged: reused
    assert build.ensure_built("clip_folder", data_dir, None, FACES) == dataset_dir         # the recorded folder
    (root / "labels.csv").write_text(SMALL_CSV.replace("s2,c,sad", "s2,c,happy"))
    for manual_dir in (root, None):   # without a manual_dir the recorded one is checked and named
        message = _refusal(data_dir, manual_dir)
        assert f"{root / 'labels.csv'} changed since the build" in message
        command = _rebuild_command(message)
        assert command == (f"python -m datasets.build clip_folder --data_dir={data_dir} --manual_dir={root} "
                           f"--crop_size=32 --overwrite")
    build.main(shlex.split(command)[3:])   # the command as printed: it really rebuilds
    labels = {clip: int(example["label"]) for clip, example in fake.read_examples(dataset_dir).items()}
    assert labels == {"a": 0, "b": 1, "c": 0}
    assert build.ensure_built("clip_folder", data_dir, str(root), FACES) == dataset_dir


def test_changed_clip_files_or_another_manual_dir_refuse_the_copy(tmp_path: Path) -> None:
    root, data_dir = tmp_path / "mine", str(tmp_path / "data")
    _write_small_tree(root)
    build.ensure_built("clip_folder", data_dir, str(root), FACES)
    extra = fake.write_frames(root / "s1" / "a", fake.FakeClip(0, [9]), FRAME)
    assert "1 clip(s) had files added, removed or modified (s1/a)" in _refusal(data_dir, root)
    extra[0].unlink()
    build.ensure_built("clip_folder", data_dir, str(root), FACES)   # as built again: reused
    frame = root / "s2" / "b" / FRAME.format(1)
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))   # same size, rewritten
    assert "(s2/b)" in _refusal(data_dir, root)
    shutil.rmtree(root / "s2" / "c")
    assert "1 clip(s) disappeared from disk (s2/c)" in _refusal(data_dir, root)
    other = tmp_path / "other"
    shutil.copytree(root, other)
    message = _refusal(data_dir, other)
    assert f"it was built from manual_dir {root}, not {other}" in message and f"--manual_dir={other}" in message


def test_an_experiment_that_builds_the_copy_prints_its_report(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from experiments import cv
    from experiments.configs import smic_bilstm

    root = tmp_path / "mine"
    _write_small_tree(root)
    config = smic_bilstm.get_config("smoke")
    config.data.name, config.data.data_dir, config.data.manual_dir = "clip_folder", str(tmp_path / "data"), str(root)
    config.data.faces.crop_size = 32
    assert len(cv.load_clip_set(config)) == 3
    out = capsys.readouterr().out
    assert f"built {tmp_path / 'data' / 'clip_folder' / 'default' / str(RealMEBuilder.VERSION)}:" in out
    assert "clips found: 3; written: 3 (happy 1, sad 2)" in out and "fixed    fps_unknown x3" in out
    cv.load_clip_set(config)   # reused: nothing to report
    assert "clips found" not in capsys.readouterr().out
