"""Clip operations: spec parsing, the registry, resize and region crops, and the stamped on-disk cache."""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
import pytest

from datasets.synthetic_me import render
from merjax.data import array_store, augment, clip_ops
from merjax.errors import UserError
from merjax.faces import regions
from tests.conftest import make_clip_set

FRAME_SHAPE = (120, 104)


def face_landmarks(num_frames: int, shift: float = 0.0) -> np.ndarray:
    """synthetic_me's template face in a 104x120 frame; frames after the first moved by ``shift`` pixels."""
    points = render.template()[:68] * (70.0, 80.0) + (21.3, 2.7)
    clip = np.repeat(points[None], num_frames, axis=0).astype(np.float32)
    clip[1:] += shift
    return clip


def face_clip_set(num_subjects: int = 2):
    clip_set = make_clip_set(num_subjects=num_subjects, clips_per_class=1, num_classes=2, size=8, min_length=2,
                             max_length=3)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (len(f), *FRAME_SHAPE, 3), dtype=np.uint8) for f in clip_set.frames]
    return dataclasses.replace(clip_set, streams={"frames": frames}, landmarks=[face_landmarks(len(f)) for f in frames])


@pytest.fixture
def counting_op():
    """A registered op that counts its calls (removed after the test)."""
    calls = []

    @clip_ops.clip_op("test_brighten", version="1")
    def brighten(clip, amount=1):
        calls.append(int(clip["apex"]))
        return {**clip, "bright": np.minimum(clip["frames"].astype(np.int32) + amount, 255).astype(np.uint8)}

    yield calls
    del clip_ops.CLIP_OPS["test_brighten"]


# --------------------------------------------------------------------------- #
# Specs and the registry.
# --------------------------------------------------------------------------- #

def test_specs_parse_to_canonical_names_and_literal_keywords():
    spec = clip_ops.parse_clip_op("crop_regions( source='frames',template = 'seed002')")
    assert spec.name == "crop_regions" and dict(spec.kwargs) == {"template": "seed002", "source": "frames"}
    assert str(spec) == "crop_regions(source='frames', template='seed002')"
    assert clip_ops.parse_clip_ops("resize(size=48)") == [clip_ops.OpSpec("resize", {"size": 48})]
    assert {"resize", "crop_regions"} <= set(clip_ops.CLIP_OPS)


@pytest.mark.parametrize("spec,why", [
    ("resize(48)", "positional"),
    ("resize(size=48", "syntax"),
    ("resize(size=int('4'))", "not a literal"),
    ("resize(size={[1]: 2})", "not a literal"),
    ("resize(size=1, size=2)", "'size' twice"),
    ("resize(size=48, colour=1)", "unexpected keyword"),
    ("resize(**{'size': 4})", "uses \\*\\*"),
    ("magnify(alpha=10)", "'magnify' is not a registered op"),
    ("ops.resize(size=4)", "not a call"),
    ("__import__('os')", "positional"),
])
def test_bad_specs_are_one_line_user_errors_naming_the_spec_the_key_and_the_ops(spec, why):
    with pytest.raises(UserError, match=why) as caught:
        clip_ops.parse_clip_op(spec)
    message = str(caught.value)
    assert repr(spec) in message and "--config.data.clip_ops" in message and "\n" not in message
    assert "registered ops: " in message and "crop_regions" in message and "resize" in message


def test_an_op_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        clip_ops.clip_op("resize")(lambda clip: clip)


def test_mirror_pairs_of_the_region_streams():
    assert clip_ops.mirror_pairs(["resize(size=4)", "crop_regions(template='seed002')"]) == (
        ("region_right_brow_eye", "region_left_brow_eye"), ("region_right_cheek", "region_left_cheek"))
    assert clip_ops.mirror_pairs(["crop_regions(template='seed003')"]) == ()


# --------------------------------------------------------------------------- #
# Operations.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("size,interpolation", [(20, cv2.INTER_AREA), (150, cv2.INTER_LINEAR)])
def test_resize_matches_cv2_and_moves_landmarks_pixel_centre_to_pixel_centre(size, interpolation):
    frames = np.random.default_rng(1).integers(0, 256, (2, *FRAME_SHAPE, 3), dtype=np.uint8)
    points = face_landmarks(2)
    out = clip_ops.CLIP_OPS["resize"].fn({"frames": frames, "landmarks": points}, size=size)
    for t in range(2):
        np.testing.assert_array_equal(out["frames"][t], cv2.resize(frames[t], (size, size),
                                                                   interpolation=interpolation))
    height, width = FRAME_SHAPE
    np.testing.assert_allclose(out["landmarks"][..., 0], (points[..., 0] + 0.5) * size / width - 0.5, rtol=1e-6)
    np.testing.assert_allclose(out["landmarks"][..., 1], (points[..., 1] + 0.5) * size / height - 0.5, rtol=1e-6)
    assert out["landmarks"].dtype == np.float32
    # The frame's top-left edge (-0.5, -0.5) stays the resized frame's top-left edge.
    np.testing.assert_allclose(clip_ops.resize_clip(frames, np.full((2, 68, 2), -0.5), size)[1], -0.5)


def test_resize_refuses_a_bad_size():
    with pytest.raises(UserError, match="positive integer"):
        clip_ops.CLIP_OPS["resize"].fn({"frames": np.zeros((1, 4, 4, 3), np.uint8),
                                        "landmarks": np.zeros((1, 68, 2))}, size=0)


def test_crop_regions_boxes_are_fixed_from_the_first_frame():
    frames = np.random.default_rng(2).integers(0, 256, (3, *FRAME_SHAPE, 3), dtype=np.uint8)
    still, moving = face_landmarks(3), face_landmarks(3, shift=9.0)
    crop = clip_ops.CLIP_OPS["crop_regions"].fn
    out = crop({"frames": frames, "landmarks": still}, template="seed002")
    template = regions.REGION_TEMPLATES["seed002"]
    assert sorted(k for k in out if k.startswith("region_")) == sorted(f"region_{r}" for r in template.regions)
    for region in template.regions:
        width, height = template.sizes[region]
        assert out[f"region_{region}"].shape == (3, height, width, 3) and out[f"region_{region}"].dtype == np.uint8
    # Later frames' landmarks do not move the boxes; the first frame's do.
    moved_later = crop({"frames": frames, "landmarks": moving}, template="seed002")
    moved_first = crop({"frames": frames, "landmarks": moving[::-1].copy()}, template="seed002")
    for region in template.regions:
        np.testing.assert_array_equal(moved_later[f"region_{region}"], out[f"region_{region}"])
        assert not np.array_equal(moved_first[f"region_{region}"], out[f"region_{region}"])
    # Each crop is the first frame's box cut from every frame and resized with cv2.
    x0, y0, x1, y1 = regions.region_boxes("seed002", still[0], FRAME_SHAPE)["mouth"]
    width, height = template.sizes["mouth"]
    shrinks = x1 - x0 > width and y1 - y0 > height
    expected = cv2.resize(frames[2, y0:y1, x0:x1], (width, height),
                          interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out["region_mouth"][2], expected)
    np.testing.assert_array_equal(out["frames"], frames)


def test_crop_regions_of_a_stream_without_time_axis():
    frames = np.random.default_rng(3).integers(0, 256, (2, *FRAME_SHAPE, 3), dtype=np.uint8)
    clip = {"frames": frames, "landmarks": face_landmarks(2), "dynamic_image": frames[1]}
    out = clip_ops.CLIP_OPS["crop_regions"].fn(clip, template="seed003", source="dynamic_image")
    assert out["dynamic_image_region_mouth"].shape == (80, 160, 3)
    with pytest.raises(UserError, match="names no stream"):
        clip_ops.CLIP_OPS["crop_regions"].fn(clip, template="seed003", source="magnified")


def test_flipped_region_streams_are_the_regions_of_the_flipped_clip():
    """A flip of the cropped streams (pairs swapped) gives the crops of the flipped clip (up to one grey level)."""
    frames = np.random.default_rng(4).integers(0, 256, (1, *FRAME_SHAPE, 3), dtype=np.uint8)
    points = face_landmarks(1)
    crop = clip_ops.CLIP_OPS["crop_regions"].fn
    streams = crop({"frames": frames, "landmarks": points}, template="seed002")
    pairs = clip_ops.mirror_pairs("crop_regions(template='seed002')")
    flipped_streams = augment.flip_streams(streams, pairs)
    flipped_frames, flipped_points = augment.hflip(frames, points)
    of_flipped = crop({"frames": flipped_frames, "landmarks": flipped_points}, template="seed002")
    for name in streams:
        if name.startswith("region_"):
            difference = np.abs(flipped_streams[name].astype(int) - of_flipped[name].astype(int))
            assert difference.max() <= 1, name


# --------------------------------------------------------------------------- #
# apply_clip_ops and its cache.
# --------------------------------------------------------------------------- #

def test_apply_runs_every_op_on_every_clip_and_keeps_the_clip_set_s_rows(counting_op):
    clip_set = face_clip_set()
    out = clip_ops.apply_clip_ops(clip_set, ["resize(size=32)", "test_brighten(amount=3)"])
    assert counting_op == clip_set.apexes.tolist()
    assert sorted(out.streams) == ["bright", "frames"] and len(out) == len(clip_set)
    for index in range(len(clip_set)):
        frames = clip_ops.resize_clip(clip_set.frames[index], clip_set.landmarks[index], 32)[0]
        np.testing.assert_array_equal(out.frames[index], frames)
        np.testing.assert_array_equal(out.streams["bright"][index], np.minimum(frames.astype(int) + 3, 255))
        assert out.landmarks[index].shape == clip_set.landmarks[index].shape
    np.testing.assert_array_equal(out.labels, clip_set.labels)
    np.testing.assert_array_equal(out.clip_ids, clip_set.clip_ids)
    assert clip_ops.apply_clip_ops(clip_set, []) is clip_set


def test_ops_cannot_write_into_the_clip_set():
    clip_set = face_clip_set()

    @clip_ops.clip_op("test_in_place")
    def in_place(clip):
        clip["frames"][0, 0, 0] = 0
        return clip

    try:
        with pytest.raises(ValueError, match="read-only"):
            clip_ops.apply_clip_ops(clip_set, ["test_in_place"])
    finally:
        del clip_ops.CLIP_OPS["test_in_place"]


def test_cache_is_reused_under_an_equal_stamp_and_rebuilt_when_specs_version_or_source_change(tmp_path,
                                                                                                 counting_op):
    clip_set = face_clip_set()
    directory = str(tmp_path / "ops")
    specs = ["resize(size=24)", "test_brighten(amount=2)"]

    def run(specs=specs, source="source-1"):
        counting_op.clear()
        out = clip_ops.apply_clip_ops(clip_set, specs, cache_dir=directory, source_digest=source)
        return out, len(counting_op) > 0

    first, computed = run()
    assert computed and isinstance(first.frames[0], np.memmap)
    assert sorted(os.listdir(directory)) == ["apex.bin", "bright.bin", "fps.bin", "frames.bin", "key.json",
                                             "landmarks.bin"]
    again, computed = run(specs=["resize( size=24 )", "test_brighten(amount=2)"])     # same canonical specs
    assert not computed
    for index in range(len(clip_set)):
        for name in ("frames", "bright"):
            np.testing.assert_array_equal(again.streams[name][index], first.streams[name][index])
        np.testing.assert_array_equal(again.landmarks[index], first.landmarks[index])
    assert run(specs=["resize(size=24)", "test_brighten(amount=5)"])[1]          # other specs
    assert not run(specs=["resize(size=24)", "test_brighten(amount=5)"])[1]
    assert run(specs=["resize(size=24)", "test_brighten(amount=5)"], source="source-2")[1]   # other source
    clip_ops.CLIP_OPS["test_brighten"] = dataclasses.replace(clip_ops.CLIP_OPS["test_brighten"], version="2")
    assert run(specs=["resize(size=24)", "test_brighten(amount=5)"], source="source-2")[1]   # other version
    # An interrupted build (no key file) is rebuilt.
    os.remove(os.path.join(directory, array_store.KEY_FILE))
    assert run(specs=["resize(size=24)", "test_brighten(amount=5)"], source="source-2")[1]
    assert not run(specs=["resize(size=24)", "test_brighten(amount=5)"], source="source-2")[1]


def test_the_default_source_digest_covers_the_pixels(tmp_path, counting_op):
    clip_set = face_clip_set()
    directory = str(tmp_path / "ops")
    clip_ops.apply_clip_ops(clip_set, ["test_brighten"], cache_dir=directory)
    counting_op.clear()
    clip_ops.apply_clip_ops(clip_set, ["test_brighten"], cache_dir=directory)
    assert not counting_op
    changed = [frames.copy() for frames in clip_set.frames]
    changed[1][0, 0, 0, 0] ^= 1
    clip_ops.apply_clip_ops(clip_set.with_streams({"frames": changed}), ["test_brighten"], cache_dir=directory)
    assert counting_op


def test_op_errors_name_the_spec_and_the_clip():
    clip_set = face_clip_set()
    with pytest.raises(UserError, match=r"crop_regions\(template='seed009'\).* clip 's1_0_0'.*seed009"):
        clip_ops.apply_clip_ops(clip_set, ["crop_regions(template='seed009')"])


def test_resample_time_keeps_the_ends_interpolates_linearly_and_maps_the_apex():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    landmarks = rng.normal(size=(7, 68, 2)).astype(np.float32)
    clip = {"frames": frames, "landmarks": landmarks, "apex": np.asarray(3), "fps": np.asarray(100.0)}
    out = clip_ops.resample_time(clip, frames=13)   # every other output frame is a source frame
    assert out["frames"].shape == (13, 4, 4, 3) and out["frames"].dtype == np.uint8
    np.testing.assert_array_equal(out["frames"][::2], frames)
    np.testing.assert_array_equal(out["frames"][1], np.round((frames[0] / 2.0 + frames[1] / 2.0)).astype(np.uint8))
    np.testing.assert_allclose(out["landmarks"][1], (landmarks[0] + landmarks[1]) / 2, rtol=1e-6)
    assert int(out["apex"]) == 6 and float(out["fps"]) == pytest.approx(200.0)
    same = clip_ops.resample_time(clip, frames=7)
    np.testing.assert_array_equal(same["frames"], frames)
    assert int(clip_ops.resample_time({**clip, "apex": np.asarray(-1)}, frames=4)["apex"]) == -1
    with pytest.raises(UserError, match="at least 2"):
        clip_ops.resample_time(clip, frames=1)


def test_a_resampled_clip_set_carries_its_new_lengths_apexes_and_fps(tmp_path):
    clip_set = face_clip_set()
    for cache_dir in (None, str(tmp_path / "ops"), str(tmp_path / "ops")):   # in memory, built, reused
        out = clip_ops.apply_clip_ops(clip_set, ["resample_time(frames=9)"], cache_dir=cache_dir,
                                      source_digest="source")
        assert list(out.lengths) == [9] * len(clip_set)
        scale = 8 / (clip_set.lengths - 1)
        np.testing.assert_array_equal(out.apexes, np.where(clip_set.apexes >= 0,
                                                           np.round(clip_set.apexes * scale), -1))
        np.testing.assert_allclose(out.fps, clip_set.fps * scale, rtol=1e-6)
