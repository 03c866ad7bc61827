"""Tests of ``synthetic_me/megc_like``: the MEGC 2019 composite-like embedded default of seed 002.

The config is checked as an object (counts, subjects, databases) and by
rendering one clip of each database at its real size; the build path is
checked on a small slice of the composite (3 subjects, 32x32, short clips)
built twice, in this process and in another. The full build is marked slow.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets import build
from datasets.megc2019 import megc2019
from datasets.synthetic_me import render, synthetic_me
from merjax.data import labels, pipeline, protocols, schema
from tests.test_synthetic_me import SMIC_HS_TABLE, _build_config, _read_all, _record_bytes

CONFIG = synthetic_me.MEGC_LIKE
REPO_ROOT = Path(__file__).resolve().parents[1]

# Seed 002, Table 1: (negative, positive, surprise) clips of each database of the composite.
TABLE_1 = {"smic": (70, 51, 43), "casme2": (88, 32, 25), "samm": (92, 26, 15)}
# database -> (subjects, fps, grayscale, stores AUs)
CHARACTER = {"smic": (16, 100.0, False, False), "casme2": (24, 200.0, False, True), "samm": (28, 200.0, True, True)}


def _database_counts(config: synthetic_me.SyntheticMEConfig) -> dict[str, tuple[int, ...]]:
    return {database.name: tuple(int(n) for n in np.sum([config.counts[s] for s in database.subjects], axis=0))
            for database in config.database_styles()}


def _first_clip_of(database: str, class_name: str) -> synthetic_me.ClipSpec:
    subjects = next(d.subjects for d in CONFIG.databases if d.name == database)
    return next(spec for spec in synthetic_me.clip_plan(CONFIG)
                if spec.subject in subjects and spec.class_name == class_name)


# --------------------------------------------------------------------------- #
# The config.
# --------------------------------------------------------------------------- #

def test_class_counts_per_database_are_table_1s() -> None:
    assert CONFIG.class_names == labels.MEGC_3 == ("negative", "positive", "surprise")
    assert [database.name for database in CONFIG.databases] == list(TABLE_1)
    assert _database_counts(CONFIG) == TABLE_1
    assert CONFIG.class_totals() == {"negative": 250, "positive": 109, "surprise": 83}
    assert len(synthetic_me.clip_plan(CONFIG)) == 442
    assert CONFIG.class_totals() == megc2019.CLASS_TOTALS   # what the real composite's builder checks


def test_68_subjects_named_as_the_real_composite_names_them() -> None:
    assert len(CONFIG.subjects) == len(set(CONFIG.subjects)) == 68
    subjects = {database.name: database.subjects for database in CONFIG.databases}
    assert {name: len(names) for name, names in subjects.items()} == {name: c[0] for name, c in CHARACTER.items()}
    # SMIC-HS subjects and per-subject counts, restated independently of the MEGC list
    assert {s: CONFIG.counts[s] for s in subjects["smic"]} == SMIC_HS_TABLE
    assert all(re.fullmatch(r"sub\d\d", s) for s in subjects["casme2"])     # CASME II folders
    assert all(re.fullmatch(r"0[0-3]\d", s) for s in subjects["samm"])      # SAMM folders 006..037
    assert subjects["casme2"][:3] == ("sub01", "sub02", "sub03") and "sub10" not in subjects["casme2"]
    assert subjects["samm"][:3] == ("006", "007", "009") and subjects["samm"][-1] == "037"
    # the list's largest CASME II and SAMM subjects (counted with grep in megc2019_composite_3class.csv)
    assert (CONFIG.counts["sub17"], CONFIG.counts["011"]) == ((23, 7, 1), (13, 7, 0))
    assert all(sum(row) > 0 for row in CONFIG.counts.values())


def test_composite_loso_over_the_plan_has_one_fold_per_subject() -> None:
    plan = synthetic_me.clip_plan(CONFIG)
    datasets = [CONFIG.database_of(spec.subject).name for spec in plan]
    folds = protocols.composite_loso(datasets, [spec.subject for spec in plan],
                                     [CONFIG.class_names.index(spec.class_name) for spec in plan],
                                     class_names=CONFIG.class_names)
    assert len(folds) == 68
    assert folds[0].name == "loso_casme2/sub01" and "loso_samm/006" in [f.name for f in folds]
    assert sum(len(fold.test) for fold in folds) == 442


def test_databases_character() -> None:
    for database in CONFIG.databases:
        _, fps, grayscale, codes = CHARACTER[database.name]
        assert (database.fps, database.grayscale, database.codes_action_units) == (fps, grayscale, codes)
    smic, casme2, samm = CONFIG.databases
    assert (smic.frames, smic.mean_frames) == (synthetic_me.SMIC_LIKE.frames, synthetic_me.SMIC_LIKE.mean_frames)
    casme2_lengths = (synthetic_me.CASME2_LIKE.frames, synthetic_me.CASME2_LIKE.mean_frames)
    assert (casme2.frames, casme2.mean_frames) == (samm.frames, samm.mean_frames) == casme2_lengths
    assert CONFIG.image_size == 128 and CONFIG.motion == render.MotionParams()


def test_the_other_configs_are_one_synthetic_me_database() -> None:
    for config in (synthetic_me.SMIC_LIKE, synthetic_me.CASME2_LIKE, synthetic_me.TINY):
        (database,) = config.database_styles()
        assert database == synthetic_me.DatabaseStyle("synthetic_me", config.subjects, config.fps, config.frames,
                                                      config.mean_frames)


def test_subjects_have_distinct_faces_and_the_smic_third_has_smic_likes() -> None:
    faces = [render.sample_identity(np.random.default_rng([CONFIG.seed, 0, i])) for i in range(len(CONFIG.subjects))]
    points = np.stack([face.control_points.ravel() for face in faces])
    distance = np.abs(points[:, None] - points[None]).max(axis=-1)
    assert distance[~np.eye(len(faces), dtype=bool)].min() > 1.0 / 128
    assert len({face.texture_seed for face in faces}) == 68
    np.testing.assert_array_equal(synthetic_me.subject_face(CONFIG, 15).image,
                                  synthetic_me.subject_face(synthetic_me.SMIC_LIKE, 15).image)   # s20
    # synthetic_faces' disjointness test walks every config of CONFIGS, this one included
    assert CONFIG in synthetic_me.CONFIGS


def test_a_database_list_that_misses_or_repeats_a_subject_is_refused() -> None:
    counts = {"a": (1, 1, 1), "b": (1, 1, 1)}
    style = dict(fps=100.0, frames=(6, 12), mean_frames=9.0)
    with pytest.raises(ValueError, match="'b'"):
        synthetic_me.SyntheticMEConfig(name="x", counts=counts,
                                       databases=(synthetic_me.DatabaseStyle("one", ("a",), **style),))
    with pytest.raises(ValueError, match="listed once"):
        synthetic_me.SyntheticMEConfig(name="x", counts=counts, databases=(
            synthetic_me.DatabaseStyle("one", ("a", "b"), **style), synthetic_me.DatabaseStyle("two", ("b",), **style)))
    with pytest.raises(ValueError, match="database 'one': mean_frames=20"):
        synthetic_me.SyntheticMEConfig(name="x", counts=counts, databases=(
            synthetic_me.DatabaseStyle("one", ("a", "b"), 100.0, (6, 12), 20.0),))


# --------------------------------------------------------------------------- #
# One clip of each database at its real size.
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def one_clip_per_database() -> dict[tuple[str, str], tuple[synthetic_me.SynthesizedClip, dict]]:
    """(database, class) -> (clip, example) for the positive and surprise clip of each database (6 renders)."""
    rendered = {}
    for database in TABLE_1:
        for class_name in ("positive", "surprise"):
            clip = synthetic_me.synthesize_clip(CONFIG, _first_clip_of(database, class_name))
            rendered[database, class_name] = clip, synthetic_me.to_example(CONFIG, clip)
    return rendered


def test_each_database_clip_has_its_fps_colour_and_dataset(one_clip_per_database) -> None:
    for (database, class_name), (clip, example) in one_clip_per_database.items():
        schema.validate(example, where=example["clip"])
        style = CONFIG.database_of(example["subject"])
        assert example["dataset"] == style.name == database
        assert example["fps"] == CHARACTER[database][1]
        frames = example["frames"]
        assert style.frames[0] <= len(frames) <= style.frames[1]
        assert frames.shape[1:] == (128, 128, 3) and example["offset"] == len(frames) - 1
        assert len(frames) // 3 <= example["apex"] <= (2 * len(frames)) // 3
        channels_equal = bool((frames[..., 0] == frames[..., 1]).all() and (frames[..., 1] == frames[..., 2]).all())
        assert channels_equal == CHARACTER[database][2], (database, class_name)
        # Each channel (grey: the one channel) has the clip's sensor noise, not a channel mean's ~0.67 of it:
        # two consecutive frames differ by about sqrt(2) noise_std.
        difference = np.std(frames[1].astype(np.float32) - frames[0])
        assert 0.9 < difference / (np.sqrt(2) * clip.motion.noise_std) < 1.3, (database, class_name)


def test_action_units_are_the_rendered_ones_except_in_smic(one_clip_per_database) -> None:
    objective_class = {"6+12": 0, "1+2": 1, "1+2+5": 6}   # I, II, VII (1+2+5 is in no row of the table)
    for (database, class_name), (clip, example) in one_clip_per_database.items():
        rendered = synthetic_me.action_unit_string(clip.action_units)
        assert rendered in {"positive": ("6+12",), "surprise": ("1+2", "1+2+5")}[class_name]
        if CHARACTER[database][3]:
            assert example["action_units"] == rendered
            assert example["objective_class"] == objective_class[rendered]
        else:   # SMIC codes no AUs: as the real smic / megc2019 builders store it
            assert (example["action_units"], example["objective_class"]) == ("", schema.UNKNOWN_OBJECTIVE_CLASS)
        assert np.linalg.norm(clip.rendered.expression[example["apex"]], axis=1).max() > 0.1


# --------------------------------------------------------------------------- #
# The build path on a slice of the composite.
# --------------------------------------------------------------------------- #

def _slice(config: synthetic_me.SyntheticMEConfig) -> synthetic_me.SyntheticMEConfig:
    """The first subject of each database with one clip per class, at 32x32 and 6-16 frames."""
    databases = tuple(dataclasses.replace(d, subjects=d.subjects[:1], frames=(6, 16), mean_frames=10.0)
                      for d in config.databases)
    return dataclasses.replace(config, name="megc_like_slice", image_size=32, databases=databases,
                               counts={d.subjects[0]: (1, 1, 1) for d in databases})


SLICE = _slice(CONFIG)
BUILD_SLICE_ELSEWHERE = """
import sys
from tests.test_synthetic_composite import SLICE
from tests.test_synthetic_me import _build_config
print(_build_config(SLICE, sys.argv[1]))
"""


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build_config(SLICE, tmp_path_factory.mktemp("slice"))


def test_slice_build_carries_each_database_and_loads_for_composite_loso(slice_dir: str) -> None:
    examples = _read_all(slice_dir)
    by_dataset = collections.Counter(schema.decode_text(e["dataset"]) for e in examples)
    assert by_dataset == {"smic": 3, "casme2": 3, "samm": 3}
    for e in examples:
        dataset = schema.decode_text(e["dataset"])
        assert float(e["fps"]) == CHARACTER[dataset][1]
        assert (schema.decode_text(e["action_units"]) != "") == CHARACTER[dataset][3]
    clip_set = pipeline.load_clips(slice_dir, 32)
    folds = protocols.composite_loso(clip_set.datasets, clip_set.subjects, clip_set.labels)
    assert sorted(fold.name for fold in folds) == ["loso_casme2/sub01", "loso_samm/006", "loso_smic/s1"]


def test_slice_builds_byte_identical_in_another_process(slice_dir: str, tmp_path: Path) -> None:
    # Another process: protobuf map order differs between processes (datasets.core.serialization).
    result = subprocess.run([sys.executable, "-c", BUILD_SLICE_ELSEWHERE, str(tmp_path / "again")],
                            cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    again = result.stdout.strip().splitlines()[-1]
    assert again != slice_dir and _record_bytes(again) == _record_bytes(slice_dir)


@pytest.mark.slow
def test_full_build_has_table_1_per_database(tmp_path: Path) -> None:
    """Builds all 442 clips (about 1-3 minutes on 2 cores): counts, fps and colour per database."""
    dataset_dir = build.ensure_built("synthetic_me/megc_like", str(tmp_path))
    clip_set = pipeline.load_clips(dataset_dir, 32)
    counts = collections.defaultdict(lambda: [0, 0, 0])
    for dataset, label in zip(clip_set.datasets.tolist(), clip_set.labels.tolist()):
        counts[dataset][label] += 1
    assert {name: tuple(row) for name, row in counts.items()} == TABLE_1
    assert len(set(protocols.subject_keys(clip_set.datasets, clip_set.subjects).tolist())) == 68
    for name, (_, fps, grayscale, codes) in CHARACTER.items():
        chosen = np.flatnonzero(clip_set.datasets == name)
        assert set(clip_set.fps[chosen].tolist()) == {fps}
        grey = [np.ptp(clip_set.frames[i], axis=-1).max() == 0 for i in chosen]
        assert all(grey) if grayscale else not any(grey)
        assert (clip_set.action_units[chosen] != "").all() == codes
