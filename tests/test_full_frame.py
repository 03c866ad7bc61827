"""Full-frame builds (``FaceOptions.full_frame``, seed 001 without face cropping): the whole frame letterboxed
to the stored square, landmarks in its coordinates, kept apart from the face-crop copies."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets import build
from datasets.core.builder import ClipSource, FaceOptions, RealMEBuilder, face_example, read_build_report
from datasets.core.frames import read_rgb
from datasets.core.quirks import QuirkLog
from experiments.configs import base
from merjax import faces as face_ops
from merjax.errors import UserError
from merjax.files import atomic_write_json, read_json
from tests import fake_databases as fake

CROP = 32
FACES = FaceOptions(crop_size=CROP)
FULL = FaceOptions(crop_size=CROP, full_frame=True)
NUM_FRAMES = 3
BACKGROUND = 90   # fake_databases' canvas colour around the face
# The fake canvas (120 x 160) letterboxed into 32 x 32: scale 1/5, the frame on rows 4..27.
SCALE, TOP = CROP / fake.CANVAS[1], (CROP - fake.CANVAS[0] * CROP // fake.CANVAS[1]) // 2


class KnownLandmarks:
    """A landmark detector that 'finds' the same box and landmarks on every frame (exact positions)."""

    name = "known"

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.asarray(points, np.float32)

    def detect_face(self, image: np.ndarray) -> face_ops.Box:
        return face_ops.Box(*self.points.min(0), *self.points.max(0))

    def landmarks(self, image: np.ndarray, box: face_ops.Box) -> np.ndarray:
        return self.points.copy()


def _stored(images: np.ndarray, points: np.ndarray, options: FaceOptions) -> dict:
    source = ClipSource(dataset="fake", subject="s1", clip="c1", emotion="happy", frames=(), fps=30.0)
    example = face_example(source, images, list(range(len(images))), 0, options, KnownLandmarks(points), QuirkLog())
    assert example is not None
    return example


@pytest.mark.parametrize("portrait", [False, True])
def test_a_frame_is_letterboxed_and_its_landmarks_follow(portrait: bool) -> None:
    # 20 x 40 frames (40 x 20 portrait) into a 20 x 20 square: scale 1/2, bars of 5 pixels.
    images = np.full((2, 20, 40, 3), BACKGROUND, np.uint8)
    images[:, 6:8, 10:12] = 250                       # a 2 x 2 mark centred on (x, y) = (10.5, 6.5)
    points = np.stack([np.linspace(1, 38, 68), np.linspace(2, 17, 68)], axis=1)
    points[0] = (10.5, 6.5)
    if portrait:
        images, points = images.transpose(0, 2, 1, 3), points[:, ::-1]
    example = _stored(images, points, FaceOptions(crop_size=20, full_frame=True))
    frames, landmarks = example["frames"], example["landmarks"]
    if portrait:   # compare in landscape orientation
        frames, landmarks, images = frames.transpose(0, 2, 1, 3), landmarks[..., ::-1], images.transpose(0, 2, 1, 3)
    assert frames.shape == (2, 20, 20, 3)
    assert (frames[:, :5] == BACKGROUND).all() and (frames[:, 15:] == BACKGROUND).all()   # the bars
    expected = np.stack([cv2.resize(image, (20, 10), interpolation=cv2.INTER_AREA) for image in images])
    np.testing.assert_array_equal(frames[:, 5:15], expected)   # the whole frame, not a face crop
    assert (frames[:, 8, 5] == 250).all()                   # the mark's pixel ...
    np.testing.assert_allclose(landmarks[:, 0], [[5.0, 8.0]] * 2)   # ... is where its landmark lands
    # pixel centres map as in cv2.resize: u = (x + 0.5) / 2 - 0.5, v likewise plus the bar
    landscape_points = points[:, ::-1] if portrait else points
    np.testing.assert_allclose(landmarks[0], (landscape_points + 0.5) / 2 - 0.5 + (0, 5), atol=1e-5)


def test_a_square_frame_is_stored_as_it_is() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    points = rng.uniform(2, 21, (68, 2))
    example = _stored(images, points, FaceOptions(crop_size=24, full_frame=True))
    np.testing.assert_array_equal(example["frames"], images)
    np.testing.assert_allclose(example["landmarks"], np.repeat(points[None], 2, axis=0), atol=1e-5)


@pytest.mark.parametrize("height,width,region", [
    (480, 640, (0, -80, 640, 640)),     # SMIC-HS: 80-pixel bars above and below
    (121, 160, (0, -20, 160, 160)),     # odd difference: 20 pixels above, 19 below
    (640, 480, (-80, 0, 640, 640)),
])
def test_frame_box_holds_the_whole_frame_centred(height: int, width: int, region: tuple) -> None:
    assert face_ops.pixel_region(face_ops.frame_box(height, width)) == region


# --------------------------------------------------------------------------- #
# Builds of one fake SMIC-HS tree (the real dlib detector), cropped and full-frame, in one data_dir.
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def smic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("SMIC")
    for subject_index, (subject, emotion, clip) in enumerate([("s1", "negative", "s1_ne_01"),
                                                              ("s2", "positive", "s2_po_01")]):
        fake.write_frames(fake.smic_clip_folder(root, subject, emotion, clip),
                          fake.FakeClip(subject_index, range(1, NUM_FRAMES + 1)), fake.smic_frame_name(False))
    return root


@pytest.fixture(scope="module")
def built(smic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The data_dir and the cropped and full-frame copies of ``smic/hs`` built in it."""
    data_dir = str(tmp_path_factory.mktemp("data"))
    return {"data_dir": data_dir,
            "cropped": build.build("smic/hs", data_dir, str(smic_root), faces=FACES),
            "full": build.build("smic/hs", data_dir, str(smic_root), faces=FULL)}


def test_cropped_and_full_frame_copies_live_apart_and_are_both_reused(built: dict[str, str],
                                                                       smic_root: Path) -> None:
    data_dir, version = Path(built["data_dir"]), str(RealMEBuilder.VERSION)
    assert built["cropped"] == str(data_dir / "smic" / "hs" / version)
    assert built["full"] == str(data_dir / build.FULL_FRAME_FOLDER / "smic" / "hs" / version)
    for options, key in ((FACES, "cropped"), (FULL, "full")):
        prepared = build.prepare("smic/hs", str(data_dir), str(smic_root), options)
        assert prepared == build.Prepared(built[key], built=False)
    assert read_build_report(built["cropped"])["faces"]["full_frame"] is False
    assert read_build_report(built["full"])["faces"] == dataclasses.asdict(FULL)


def test_full_frame_copy_stores_the_letterboxed_frames(built: dict[str, str]) -> None:
    full, cropped = fake.read_examples(built["full"]), fake.read_examples(built["cropped"])
    assert sorted(full) == sorted(cropped) == ["s1_ne_01", "s2_po_01"]
    for subject_index, clip in enumerate(sorted(full)):
        frames = full[clip]["frames"]
        written, _ = fake.face_frames(subject_index, NUM_FRAMES)   # bmp: read back as written
        assert frames.shape == (NUM_FRAMES, CROP, CROP, 3)
        band = slice(TOP, CROP - TOP)
        expected = np.stack([cv2.resize(image, (CROP, CROP - 2 * TOP), interpolation=cv2.INTER_AREA)
                             for image in written])
        np.testing.assert_array_equal(frames[:, band], expected)
        assert (frames[:, :TOP] == BACKGROUND).all() and (frames[:, CROP - TOP:] == BACKGROUND).all()
        assert not np.array_equal(frames, cropped[clip]["frames"])   # the crop is another picture


def test_full_frame_landmarks_are_the_detected_ones_scaled_and_shifted(built: dict[str, str],
                                                                        smic_root: Path) -> None:
    detector = FULL.make_detector()
    full, cropped = fake.read_examples(built["full"]), fake.read_examples(built["cropped"])
    for subject_index, (subject, emotion, clip) in enumerate([("s1", "negative", "s1_ne_01"),
                                                              ("s2", "positive", "s2_po_01")]):
        first = read_rgb(fake.smic_clip_folder(smic_root, subject, emotion, clip) / "image000001.bmp")
        found = face_ops.first_face([first], detector)
        expected = (found.landmarks + 0.5) * SCALE - 0.5 + (0, TOP)
        landmarks = full[clip]["landmarks"]
        np.testing.assert_allclose(landmarks, np.repeat(expected[None], NUM_FRAMES, axis=0), atol=1e-4)
        # on the rendered face's own points, within dlib's error there (~5 px in the frame: ~1 px stored)
        _, truth = fake.face_frames(subject_index, NUM_FRAMES)
        assert np.abs(landmarks[0] - ((truth[0] + 0.5) * SCALE - 0.5 + (0, TOP))).mean() < 2.0
        # the face fills less of a full frame than of its crop
        assert np.ptp(landmarks[0][:, 0]) < 0.8 * np.ptp(cropped[clip]["landmarks"][0][:, 0])


def test_cli_and_config_reach_the_full_frame_copy(built: dict[str, str], smic_root: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = built["data_dir"]
    build.main(["smic/hs", f"--data_dir={data_dir}", f"--manual_dir={smic_root}", f"--crop_size={CROP}",
                "--full_frame"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == built["full"]
    assert "--full_frame" in build.rebuild_command("smic/hs", data_dir, str(smic_root), FULL)
    faces = {**base.base().data.faces.to_dict(), "crop_size": CROP}
    assert faces["full_frame"] is False
    for full_frame, key in ((False, "cropped"), (True, "full")):
        (prepared,) = build.ensure_all_built("smic/hs", data_dir, str(smic_root), {**faces, "full_frame": full_frame})
        assert prepared == build.Prepared(built[key], built=False)


def test_a_copy_built_the_other_way_is_refused_naming_full_frame(built: dict[str, str], smic_root: Path) -> None:
    # A cropped request pointed at the full-frame folder finds a copy whose stamp says otherwise.
    with pytest.raises(UserError, match="full_frame=True, not full_frame=False") as error:
        build.ensure_built("smic/hs", str(Path(built["data_dir"]) / build.FULL_FRAME_FOLDER), str(smic_root),
                           FACES)
    assert "--overwrite" in str(error.value)


def test_a_copy_built_before_the_option_existed_counts_as_cropped(built: dict[str, str], smic_root: Path,
                                                                  tmp_path: Path) -> None:
    older = tmp_path / "smic" / "hs" / str(RealMEBuilder.VERSION)
    shutil.copytree(built["cropped"], older)
    report = read_json(older / "metadata.json")
    del report["faces"]["full_frame"]
    atomic_write_json(older / "metadata.json", report)
    assert build.ensure_built("smic/hs", str(tmp_path), str(smic_root), FACES) == str(older)
