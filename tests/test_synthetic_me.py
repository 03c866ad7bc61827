"""Tests of the embedded synthetic dataset (datasets/synthetic_me) and the builder CLI (datasets/build.py).

Only the ``tiny`` config is built (32x32, 24 clips); the SMIC-like configs are
checked as config objects.
"""

from __future__ import annotations

import collections
import dataclasses
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import build
from datasets.synthetic_me import difficulty, render, synthetic_me
from merjax.data import labels, pipeline, schema
from merjax.errors import UserError

TINY = "synthetic_me/tiny"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _read_all(dataset_dir: str) -> list[dict]:
    source = tfds.builder_from_directory(dataset_dir).as_data_source(split="train")
    return [source[i] for i in range(len(source))]


def _record_bytes(dataset_dir: str) -> dict[str, bytes]:
    files = sorted(Path(dataset_dir).glob("*.array_record*"))
    assert files, f"no array_record file in {dataset_dir}"
    return {f.name: f.read_bytes() for f in files}


def _build_config(config: synthetic_me.SyntheticMEConfig, data_dir: Path) -> str:
    builder = synthetic_me.SyntheticMe(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return str(builder.data_dir)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build.ensure_built(TINY, str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def tiny_examples(tiny_dir: str) -> list[dict]:
    return _read_all(tiny_dir)


# --------------------------------------------------------------------------- #
# The built dataset.
# --------------------------------------------------------------------------- #

def test_ensure_built_returns_the_prepared_directory_and_reuses_it(tiny_dir: str) -> None:
    assert (Path(tiny_dir) / "dataset_info.json").is_file()
    assert Path(tiny_dir).name == "1.1.0" and Path(tiny_dir).parent.name == "tiny"
    records = sorted(Path(tiny_dir).glob("*.array_record*"))
    mtimes = [f.stat().st_mtime_ns for f in records]
    data_dir = str(Path(tiny_dir).parents[2])
    assert build.ensure_built(TINY, data_dir) == tiny_dir
    assert [f.stat().st_mtime_ns for f in records] == mtimes


def test_counts_per_subject_and_class_equal_the_config(tiny_examples: list[dict]) -> None:
    config = synthetic_me.TINY
    counted = collections.Counter(
        (schema.decode_text(e["subject"]), config.class_names[int(e["label"])]) for e in tiny_examples)
    expected = {(subject, name): row[c] for subject, row in config.counts.items()
                for c, name in enumerate(config.class_names) if row[c]}
    assert dict(counted) == expected


def test_examples_follow_the_schema(tiny_examples: list[dict]) -> None:
    config = synthetic_me.TINY
    clip_ids = set()
    for e in tiny_examples:
        clip = schema.decode_text(e["clip"])
        schema.validate(e, where=clip)
        num_frames = e["frames"].shape[0]
        assert e["frames"].shape[1:] == (config.image_size, config.image_size, 3)
        assert config.frames[0] <= num_frames <= config.frames[1]
        assert int(e["onset"]) == 0 and int(e["offset"]) == num_frames - 1
        assert num_frames // 3 <= int(e["apex"]) <= (2 * num_frames) // 3
        assert float(e["fps"]) == config.fps
        assert schema.decode_text(e["dataset"]) == "synthetic_me"
        emotion = schema.decode_text(e["emotion"])
        assert emotion == config.class_names[int(e["label"])]
        subject = schema.decode_text(e["subject"])
        abbreviation = {"negative": "ne", "positive": "po", "surprise": "sur"}[emotion]
        assert clip.startswith(f"{subject}_{abbreviation}_") and len(clip.rsplit("_", 1)[1]) == 2
        clip_ids.add(clip)
    assert len(clip_ids) == len(tiny_examples)


def test_stored_clips_match_the_ground_truth_and_start_neutral(tiny_examples: list[dict]) -> None:
    config = synthetic_me.TINY
    stored = {schema.decode_text(e["clip"]): e for e in tiny_examples}
    for spec in synthetic_me.clip_plan(config)[::3]:
        truth = synthetic_me.synthesize_clip(config, spec)
        example = stored[spec.clip]
        np.testing.assert_array_equal(example["frames"], truth.rendered.frames)
        np.testing.assert_array_equal(example["landmarks"], truth.rendered.landmarks)
        # Frame 0: no AU, no blink, no drift: the subject's neutral face under the clip's crop jitter.
        assert not truth.motion.expression[0].any() and truth.motion.lid_closure[0] == 0
        face = synthetic_me.subject_face(config, spec.subject_index)
        neutral = render.apply_affine(truth.motion.pose[0], face.control_points[:render.NUM_LANDMARKS])
        np.testing.assert_allclose(example["landmarks"][0], neutral, atol=1e-4)
        apex = int(example["apex"])
        assert np.linalg.norm(truth.rendered.expression[apex], axis=1).max() > 0.1
        # the AUs it rendered, and the objective class they make by Davison et al.'s table
        assert schema.decode_text(example["action_units"]) == "+".join(map(str, sorted(truth.action_units)))
        assert int(example["objective_class"]) == labels.objective_class_of(truth.action_units)
        assert np.abs(example["landmarks"][apex] - example["landmarks"][0]).max() > 0.01


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path, tiny_dir: str) -> None:
    # Another process, through the CLI: protobuf map order differs between processes.
    subprocess.run([sys.executable, "-m", "datasets.build", TINY, f"--data_dir={tmp_path / 'again'}"],
                   cwd=REPO_ROOT, check=True, capture_output=True)
    again = tmp_path / "again" / "synthetic_me" / "tiny" / str(synthetic_me.SyntheticMe.VERSION)
    assert _record_bytes(str(again)) == _record_bytes(tiny_dir)
    other = _build_config(dataclasses.replace(synthetic_me.TINY, name="tiny_seed1", seed=1), tmp_path / "other")
    assert _record_bytes(other).keys() == _record_bytes(tiny_dir).keys()
    assert _record_bytes(other) != _record_bytes(tiny_dir)


# --------------------------------------------------------------------------- #
# Configs.
# --------------------------------------------------------------------------- #

# SMIC-HS (negative, positive, surprise) per subject, restated from reference/datasets.md §1.3.
SMIC_HS_TABLE = {
    "s1": (3, 2, 1), "s2": (0, 1, 5), "s3": (22, 11, 6), "s4": (10, 4, 5), "s5": (1, 0, 1),
    "s6": (2, 0, 2), "s8": (9, 4, 0), "s9": (0, 1, 3), "s11": (3, 3, 1), "s12": (0, 8, 1),
    "s13": (0, 10, 0), "s14": (3, 2, 5), "s15": (1, 1, 2), "s18": (2, 0, 5), "s19": (0, 1, 1),
    "s20": (14, 3, 5),
}


def test_smic_like_has_smic_hs_subjects_and_counts() -> None:
    config = synthetic_me.SMIC_LIKE
    assert config.class_names == labels.SMIC_3
    assert config.subjects == tuple(SMIC_HS_TABLE)
    assert dict(config.counts) == SMIC_HS_TABLE
    assert config.class_totals() == {"negative": 70, "positive": 51, "surprise": 43}
    assert len(synthetic_me.clip_plan(config)) == 164
    assert (config.fps, config.frames, config.image_size) == (100.0, (11, 58), 128)


def test_smic_like_4class_adds_one_non_micro_clip_per_micro_clip() -> None:
    config = synthetic_me.SMIC_LIKE_4CLASS
    assert config.class_names == labels.SMIC_4
    for subject, row in SMIC_HS_TABLE.items():
        assert config.counts[subject] == row + (sum(row),)
    assert config.class_totals()["non_micro"] == 164


def test_adding_a_class_keeps_the_other_clips_identical() -> None:
    plan3 = synthetic_me.clip_plan(synthetic_me.SMIC_LIKE)
    plan4 = synthetic_me.clip_plan(synthetic_me.SMIC_LIKE_4CLASS)
    assert plan4[:len(plan3)] == plan3
    assert {spec.class_name for spec in plan4[len(plan3):]} == {"non_micro"}


def test_casme2_like_config() -> None:
    config = synthetic_me.CASME2_LIKE
    assert config.subjects == tuple(f"sub{i:02d}" for i in range(1, 27))
    assert config.class_names == ("negative", "positive", "surprise", "others")
    assert config.fps == 200.0 and 100 <= len(synthetic_me.clip_plan(config)) <= 200


def test_non_micro_clips_move_no_action_unit() -> None:
    config = dataclasses.replace(synthetic_me.TINY, class_names=labels.SMIC_4,
                                 counts={"s1": (0, 0, 0, 2)})
    for spec in synthetic_me.clip_plan(config):
        clip = synthetic_me.synthesize_clip(config, spec)
        assert clip.action_units == {} and not clip.rendered.expression.any()
        assert spec.clip == f"s1_nm_{spec.number:02d}"
        example = synthetic_me.to_example(config, clip)
        assert (example["action_units"], example["objective_class"]) == ("", -1)


def test_action_units_and_objective_classes_of_the_tiny_config(tiny_examples: list[dict]) -> None:
    stored = collections.Counter((schema.decode_text(e["emotion"]), schema.decode_text(e["action_units"]),
                                  int(e["objective_class"])) for e in tiny_examples)
    # positive clips render 6+12 (class I); surprise 1+2 (II) or 1+2+5 (not in the table: VII, others);
    # negative a mix of 4, 9, 14, 15 (4: III; others VII here)
    assert stored == {
        ("positive", "6+12", 0): 8, ("surprise", "1+2", 1): 3, ("surprise", "1+2+5", 6): 5,
        ("negative", "4", 2): 3, ("negative", "9+15", 6): 2, ("negative", "14", 6): 2, ("negative", "4+14+15", 6): 1}


# --------------------------------------------------------------------------- #
# A prepared copy written by an older version (1.0.0: no action units).
# --------------------------------------------------------------------------- #

ADDED_IN_1_1_0 = ("action_units", "objective_class")


@pytest.fixture(scope="module")
def old_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``synthetic_me/tiny`` as version 1.0.0 wrote it: the schema before action units, in folder 1.0.0."""
    current_features, current_example = schema.features, synthetic_me.to_example
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schema, "features", lambda *args: tfds.features.FeaturesDict(
            {name: feature for name, feature in current_features(*args).items() if name not in ADDED_IN_1_1_0}))
        patch.setattr(schema, "validate", lambda example, where: None)
        patch.setattr(synthetic_me, "to_example", lambda config, clip: {
            name: value for name, value in current_example(config, clip).items() if name not in ADDED_IN_1_1_0})
        patch.setattr(synthetic_me.SyntheticMe, "VERSION", tfds.core.Version("1.0.0"))
        old = build.build(TINY, str(tmp_path_factory.mktemp("old")))
    assert Path(old).name == "1.0.0" and "action_units" not in _read_all(old)[0]
    return old


def _copy_data_dir(dataset_dir: str, into: Path, version: str | None = None) -> Path:
    """Copies a prepared ``synthetic_me/tiny`` copy into a new data_dir (its folder named ``version``)."""
    copy = into / "synthetic_me" / "tiny" / (version or Path(dataset_dir).name)
    shutil.copytree(dataset_dir, copy)
    return copy


def test_load_clips_refuses_an_older_copy_naming_the_rebuild_command(old_tiny_dir: str, tmp_path: Path) -> None:
    old = _copy_data_dir(old_tiny_dir, tmp_path / "data")
    with pytest.raises(UserError) as error:
        pipeline.load_clips(str(old), 32)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{old}: record 0 (clip ")
    assert "no feature(s) action_units, objective_class: written by an older version of its builder" in message
    command = message.split("rebuild it: ")[1]
    assert command == f"python -m datasets.build synthetic_me/tiny --data_dir={tmp_path / 'data'} --overwrite"
    build.main(shlex.split(command)[3:])   # the command as printed builds the current version beside the old copy
    rebuilt = tmp_path / "data" / "synthetic_me" / "tiny" / str(synthetic_me.SyntheticMe.VERSION)
    clip_set = pipeline.load_clips(str(rebuilt), 32)
    assert "6+12" in clip_set.action_units and (clip_set.objective_classes >= 0).any()
    assert old.is_dir()


def test_ensure_all_built_builds_the_new_version_beside_an_older_copy(old_tiny_dir: str, tmp_path: Path) -> None:
    old = _copy_data_dir(old_tiny_dir, tmp_path / "data")
    (prepared,) = build.ensure_all_built(TINY, str(tmp_path / "data"))
    assert prepared.built and Path(prepared.directory) == old.parent / "1.1.0"
    clip_set = pipeline.load_clips(prepared.directory, 32)
    # the frames and labels of the older copy, now with action units
    old_examples = {schema.decode_text(e["clip"]): e for e in _read_all(str(old))}
    for index, clip in enumerate(clip_set.clip_ids):
        np.testing.assert_array_equal(clip_set.frames[index], old_examples[clip]["frames"])
        assert clip_set.labels[index] == int(old_examples[clip]["label"])
    assert clip_set.action_units.dtype.kind == "U" and clip_set.objective_classes.dtype == np.int32
    assert build.ensure_all_built(TINY, str(tmp_path / "data"))[0].built is False


def test_a_copy_without_the_new_features_in_the_current_folder_is_refused(old_tiny_dir: str, tmp_path: Path) -> None:
    _copy_data_dir(old_tiny_dir, tmp_path / "data", version=str(synthetic_me.SyntheticMe.VERSION))
    with pytest.raises(UserError) as error:
        build.ensure_all_built(TINY, str(tmp_path / "data"))
    assert str(error.value) == (
        f"the prepared copy {tmp_path / 'data' / 'synthetic_me' / 'tiny' / '1.1.0'} does not match: it has no "
        "feature(s) action_units, objective_class: an older version of its builder wrote it; rebuild it: "
        f"python -m datasets.build synthetic_me/tiny --data_dir={tmp_path / 'data'} --overwrite "
        "(or use another data_dir)")


# --------------------------------------------------------------------------- #
# The difficulty report (reads the copy with pipeline.load_clips).
# --------------------------------------------------------------------------- #

def test_difficulty_report_on_the_tiny_config(tiny_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    difficulty.main([f"--data_dir={Path(tiny_dir).parents[2]}", "--config=tiny", "--folds=2", "--grid=4"])
    out = capsys.readouterr().out
    assert out.startswith("synthetic_me/tiny: 24 clips, 4 subjects, classes {'negative': 8, 'positive': 8, "
                          "'surprise': 8}; 2-fold by subject")
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| features")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| chance: majority class", "| chance: uniform random guess (expected)",
        *(f"| {name}" for name in difficulty.BASELINES)]
    for row in rows:
        accuracy, uar, uf1 = (float(cell) for cell in row.strip(" |").split(" | ")[1:])
        assert 0.0 <= min(accuracy, uar, uf1) and max(accuracy, uar, uf1) <= 1.0
    assert "median largest non-rigid landmark motion at apex (AU + blink)" in out


# --------------------------------------------------------------------------- #
# Errors.
# --------------------------------------------------------------------------- #

def test_unknown_dataset_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'no_such_data'.*synthetic_me"):
        build.ensure_built("no_such_data/smic_like", str(tmp_path))


def test_unknown_config_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown config 'smic_huge'.*smic_like.*tiny"):
        build.ensure_built("synthetic_me/smic_huge", str(tmp_path))


# --------------------------------------------------------------------------- #
# The renderer.
# --------------------------------------------------------------------------- #

def _control_points(size: int) -> np.ndarray:
    identity = render.sample_identity(np.random.default_rng(0))
    return render.with_border(identity.control_points * size, size)


def test_warp_with_zero_displacement_returns_the_image() -> None:
    size = 64
    image = np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32)
    points = _control_points(size)
    warped = render.warp(image, points, points, render.triangulation())
    np.testing.assert_allclose(warped, image, atol=1e-2)


def _centroid(image: np.ndarray) -> np.ndarray:
    y, x = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(x * image).sum(), (y * image).sum()]) / image.sum()


def test_warp_moves_a_bright_dot_with_its_landmarks() -> None:
    size = 128
    points = _control_points(size)
    y, x = np.mgrid[0:size, 0:size]
    nose = points[30]
    dot = np.exp(-((x - nose[0]) ** 2 + (y - nose[1]) ** 2) / (2 * 1.5 ** 2)).astype(np.float32)
    shift = np.array([1.5, -0.75])
    moved = points.copy()
    moved[:render.NUM_CONTROL] += shift  # the whole face moves; the border stays
    warped = render.warp(dot, points, moved, render.triangulation())
    np.testing.assert_allclose(_centroid(warped) - _centroid(dot), shift, atol=0.05)


def test_mesh_stays_unfolded_at_the_largest_expression_with_a_blink() -> None:
    triangles = render.triangulation()
    size = 128
    for subject in range(20):
        identity = render.sample_identity(np.random.default_rng([7, 0, subject]))
        neutral = identity.control_points * size
        assert render.signed_areas(render.with_border(neutral, size), triangles).min() > 0
        for au in render.ACTION_UNITS:
            expressed = neutral + render.au_field(au) * render.MotionParams().amplitude_px[1]
            blinked = expressed + render.blink_field(expressed, render.MotionParams().blink_closure[1])
            assert render.signed_areas(render.with_border(blinked, size), triangles).min() > 0, (subject, au)


def test_envelope_is_zero_at_both_ends_and_one_at_apex() -> None:
    envelope = render.apex_envelope(30, 12)
    assert envelope[0] == 0 and envelope[12] == 1 and abs(envelope[-1]) < 1e-12
    assert np.all(np.diff(envelope[:13]) > 0) and np.all(np.diff(envelope[12:]) < 0)
