"""Tests of the pretraining corpus (datasets/synthetic_faces) and the ``identity`` target.

Only the ``tiny`` config is built (6 identities x 9 classes x 2 renders, 32x32).
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from datasets import build
from datasets.synthetic_faces import synthetic_faces
from datasets.synthetic_me import render, synthetic_me
from merjax.data import labels, pipeline, schema, targets
from tests.test_synthetic_me import _read_all, _record_bytes   # the synthetic_me tests' readers

TINY = "synthetic_faces/tiny"
# The AUs each class may render (disgust with or without AU17).
CLASS_AUS = {
    "neutral": [""], "anger": ["4+7+24"], "disgust": ["9+15", "9+15+17"], "fear": ["1+2+4+5"], "happy": ["6+12"],
    "sad": ["1+4+15"], "surprise": ["1+2+5"], "shame": ["4+15+17"], "contempt": ["14"],
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build.ensure_built(TINY, str(tmp_path_factory.mktemp("faces")))


@pytest.fixture(scope="module")
def tiny_examples(tiny_dir: str) -> list[dict]:
    return _read_all(tiny_dir)


def test_every_identity_poses_every_class_renders_times(tiny_examples: list[dict]) -> None:
    config = synthetic_faces.TINY
    counted = collections.Counter((schema.decode_text(e["subject"]), int(e["label"])) for e in tiny_examples)
    assert counted == {(subject, label): config.renders_per_class
                       for subject in config.subjects for label in range(len(synthetic_faces.MACRO_9))}


def test_examples_are_one_frame_clips_of_the_schema_in_seed_004s_classes(tiny_examples: list[dict],
                                                                        tiny_dir: str) -> None:
    assert synthetic_faces.MACRO_9 == ("neutral", "anger", "disgust", "fear", "happy", "sad", "surprise", "shame",
                                       "contempt")
    for example in tiny_examples:
        schema.validate(example)
        assert example["frames"].shape == (1, 32, 32, 3)
        assert (int(example["onset"]), int(example["apex"]), int(example["offset"])) == (0, 0, 0)
        emotion = schema.decode_text(example["emotion"])
        assert emotion == synthetic_faces.MACRO_9[int(example["label"])]
        action_units = schema.decode_text(example["action_units"])
        assert action_units in CLASS_AUS[emotion]
        units = [int(au) for au in action_units.split("+")] if action_units else []
        assert int(example["objective_class"]) == labels.objective_class_of(units)
    clip_set = pipeline.load_clips(tiny_dir, 24)
    assert clip_set.class_names == synthetic_faces.MACRO_9
    assert [frames.shape for frames in clip_set.frames[:2]] == [(1, 24, 24, 3)] * 2


def test_same_seed_builds_byte_identical_files_and_another_seed_differs(tmp_path: Path, tiny_dir: str) -> None:
    again = build.ensure_built(TINY, str(tmp_path / "again"))
    assert _record_bytes(again) == _record_bytes(tiny_dir)
    other = dataclasses.replace(synthetic_faces.TINY, name="tiny_seed1", seed=1)
    builder = synthetic_faces.SyntheticFaces(config=other, data_dir=str(tmp_path / "other"),
                                             file_format="array_record")
    builder.download_and_prepare()
    assert _record_bytes(str(builder.data_dir)) != _record_bytes(tiny_dir)


def test_no_corpus_identity_is_a_subject_of_a_synthetic_micro_expression_dataset() -> None:
    # synthetic_me draws subject k from default_rng([seed, 0, k]) (checked on one subject against subject_face).
    subjects = [render.sample_identity(np.random.default_rng([config.seed, 0, index]))
                for config in synthetic_me.CONFIGS for index in range(len(config.subjects))]
    np.testing.assert_array_equal(synthetic_me.subject_face(synthetic_me.CASME2_LIKE, 25).identity.control_points,
                                  subjects[-len(synthetic_me.TINY.subjects) - 1].control_points)
    corpus = [synthetic_faces.sample_identity(config, index)
              for config in synthetic_faces.CONFIGS for index in range(config.identities)]
    assert len(corpus) >= synthetic_faces.DEFAULT.identities

    def points(identities: list[render.Identity]) -> np.ndarray:
        return np.stack([identity.control_points for identity in identities]).reshape(len(identities), -1)

    # The closest pair differs by more than a pixel of a 128 crop somewhere, and no skin texture is shared.
    closest = np.abs(points(corpus)[:, None] - points(subjects)[None]).max(axis=-1).min()
    assert closest > 1.0 / 128
    assert not {identity.texture_seed for identity in corpus} & {identity.texture_seed for identity in subjects}
    # Control: the comparison finds an identity drawn from synthetic_me's stream.
    drawn_like_a_subject = render.sample_identity(np.random.default_rng([0, 0, 3]))
    assert np.abs(points([drawn_like_a_subject]) - points(subjects)).max(axis=-1).min() == 0.0


def _amplitude(rendered: synthetic_faces.RenderedFace) -> float:
    return float(np.linalg.norm(rendered.expression, axis=-1).max())


def test_expressions_are_macro_sized_and_never_fold_the_mesh() -> None:
    config = synthetic_faces.DEFAULT
    amplitudes = collections.defaultdict(list)
    for identity_index in range(3):
        face = synthetic_faces.identity_face(config, identity_index)
        for class_index, name in enumerate(synthetic_faces.MACRO_9):
            rendered = synthetic_faces.render_face(config, face, class_index, 0, identity_index)
            amplitudes[name].append(_amplitude(rendered))
    assert amplitudes.pop("neutral") == [0.0] * 3
    every = np.concatenate(list(amplitudes.values()))
    assert every.min() >= 3.0 and every.max() <= 8.0 + 1e-4 and np.median(every) >= 4.0   # synthetic_me: 0.5-3 px


def test_largest_amplitude_keeps_every_triangle_and_a_little_more_does_not() -> None:
    face = synthetic_faces.identity_face(synthetic_faces.DEFAULT, 0)
    field = render.expression_field({4: 1.0, 7: 1.0, 24: 1.0}, 0.0)
    largest = synthetic_faces.largest_amplitude(face.control_points, field, 128)
    triangles = render.triangulation()
    neutral = render.signed_areas(render.with_border(face.control_points, 128), triangles)

    def smallest_share(amplitude: float) -> float:
        moved = render.with_border(face.control_points + amplitude * field, 128)
        return float((render.signed_areas(moved, triangles) / neutral).min())

    assert smallest_share(largest) >= synthetic_faces.MIN_AREA_KEPT > smallest_share(largest + 0.01)
    assert synthetic_faces.largest_amplitude(face.control_points, np.zeros_like(field), 128) == np.inf


def test_contempt_moves_one_side_of_the_face_only_either_side() -> None:
    config = synthetic_faces.DEFAULT
    face = synthetic_faces.identity_face(config, 0)
    image_left = render.template()[:68, 0] < 0.5
    moved_sides = set()
    for render_index in range(8):
        rendered = synthetic_faces.render_face(config, face, synthetic_faces.MACRO_9.index("contempt"), render_index, 0)
        moving = np.linalg.norm(rendered.expression, axis=-1) > 1e-6
        assert moving.any() and not (moving[image_left].any() and moving[~image_left].any())
        moved_sides.add(bool(moving[image_left].any()))
    assert moved_sides == {True, False}


def test_identity_target_indexes_the_subjects(tiny_dir: str) -> None:
    clip_set = pipeline.load_clips(tiny_dir, 16)
    values, count = targets.TARGETS["identity"](clip_set)
    assert count == synthetic_faces.TINY.identities
    names = sorted(set(clip_set.subjects.tolist()))
    assert [names[v] for v in values] == clip_set.subjects.tolist()
    # Subjects of two databases with one name stay apart.
    twice = pipeline.concat_clip_sets([clip_set, dataclasses.replace(clip_set, datasets=np.full(len(clip_set), "b"))])
    assert targets.TARGETS["identity"](twice)[1] == 2 * count
