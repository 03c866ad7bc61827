"""merjax.data.array_store: per-clip arrays reused only under an equal key, never from an interrupted build."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from merjax.data import array_store
from merjax.data.array_store import ArraySpec


def _clips(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (length, 3, 5, 3), dtype=np.uint8) for length in (2, 4, 3)]


def _write(directory, key, frames, points):
    writer = array_store.Writer(directory, key)
    for clip_frames, clip_points in zip(frames, points):
        writer.append("frames", clip_frames)
        writer.append("landmarks", clip_points)
    return writer.finish(note="test")


def test_appended_streams_read_back_memory_mapped_and_are_reused_under_the_same_key(tmp_path):
    frames = _clips()
    points = [np.arange(len(f) * 4, dtype=np.float32).reshape(len(f), 2, 2) for f in frames]
    written = _write(str(tmp_path), "k1", frames, points)
    assert sorted(os.listdir(tmp_path)) == ["frames.bin", "key.json", "landmarks.bin"]
    reused = array_store.open(str(tmp_path), "k1")
    for stored in (written, reused):
        assert isinstance(stored["frames"][1], np.memmap) and not stored["frames"][1].flags.writeable
        for clip in range(3):
            np.testing.assert_array_equal(stored["frames"][clip], frames[clip])
            np.testing.assert_array_equal(stored["landmarks"][clip], points[clip])
            assert stored["landmarks"][clip].dtype == np.float32
    assert array_store.open(str(tmp_path), "k2") is None
    expected = {"frames": [ArraySpec.of(f) for f in frames], "landmarks": [ArraySpec.of(p) for p in points]}
    assert array_store.open(str(tmp_path), "k1", expected) is not None
    other_shape = dict(expected, frames=[ArraySpec((2, 3, 5, 3), np.uint8)] * 3)
    assert array_store.open(str(tmp_path), "k1", other_shape) is None
    other_dtype = dict(expected, landmarks=[ArraySpec(p.shape, np.float64) for p in points])
    assert array_store.open(str(tmp_path), "k1", other_dtype) is None
    assert array_store.open(str(tmp_path), "k1", {"frames": expected["frames"]}) is None
    assert array_store.open(str(tmp_path / "absent"), "k1") is None


def test_allocated_stream_is_filled_in_place_on_disk_and_in_memory(tmp_path):
    specs = [ArraySpec((2, 3), np.float16), ArraySpec((1, 5), np.float16)]
    for directory in (str(tmp_path), None):
        writer = array_store.Writer(directory, "k")
        arrays = writer.allocate("features", specs)
        assert isinstance(arrays[0], np.memmap) == (directory is not None)
        arrays[1][0] = np.arange(5)
        arrays[0][:] = 7
        stored = writer.finish()
        np.testing.assert_array_equal(stored["features"][1], np.arange(5, dtype=np.float16)[None])
        np.testing.assert_array_equal(stored["features"][0], np.full((2, 3), 7, np.float16))
    assert array_store.open(str(tmp_path), "k", {"features": specs}) is not None


def test_a_build_without_its_key_file_is_never_reused_and_a_rebuild_replaces_it(tmp_path):
    frames = _clips()
    points = [np.zeros((len(f), 2, 2), np.float32) for f in frames]
    first = _write(str(tmp_path), "k", frames, points)
    old = np.array(first["frames"][0])
    # A rebuild that is cut short: the key file is gone before any array is touched.
    writer = array_store.Writer(str(tmp_path), "k")
    writer.append("frames", frames[0])
    assert array_store.open(str(tmp_path), "k") is None
    # Arrays mapped from the earlier store keep their bytes while the new one is written beside them.
    np.testing.assert_array_equal(first["frames"][0], old)
    del writer
    other = _clips(seed=1)
    rebuilt = _write(str(tmp_path), "k", other, points)
    np.testing.assert_array_equal(rebuilt["frames"][2], other[2])
    np.testing.assert_array_equal(first["frames"][0], old)
    assert sorted(os.listdir(tmp_path)) == ["frames.bin", "key.json", "landmarks.bin"]


def test_a_short_stream_file_or_a_damaged_key_file_is_not_reused(tmp_path):
    frames = _clips()
    _write(str(tmp_path), "k", frames, [np.zeros((len(f), 2), np.float32) for f in frames])
    with open(tmp_path / "frames.bin", "r+b") as f:
        f.truncate(10)
    assert array_store.open(str(tmp_path), "k") is None
    (tmp_path / "key.json").write_text('{"key": "k", "str')
    assert array_store.open(str(tmp_path), "k") is None


def test_stale_streams_of_an_earlier_store_are_deleted(tmp_path):
    frames = _clips()
    _write(str(tmp_path), "k", frames, [np.zeros((len(f), 2), np.float32) for f in frames])
    writer = array_store.Writer(str(tmp_path), "k2")
    for clip in frames:
        writer.append("frames", clip)
    writer.finish()
    assert sorted(os.listdir(tmp_path)) == ["frames.bin", "key.json"]


def test_writer_refuses_mismatched_streams_and_bad_names(tmp_path):
    writer = array_store.Writer(None)
    writer.append("a", np.zeros(2))
    writer.append("a", np.zeros(2))
    writer.append("b", np.zeros(2))
    with pytest.raises(ValueError, match="same number of clips"):
        writer.finish()
    with pytest.raises(ValueError, match="names a file"):
        array_store.Writer(None).append("../x", np.zeros(1))
    allocating = array_store.Writer(str(tmp_path), "k")
    allocating.allocate("a", [ArraySpec((1,), np.float32)])
    with pytest.raises(ValueError, match="allocated"):
        allocating.append("a", np.zeros(1))
    with pytest.raises(ValueError, match="needs a key"):
        array_store.Writer(str(tmp_path))


def test_key_covers_array_bytes_shapes_structure_and_values():
    variables = {"params": {"w": jnp.ones((2, 3))}, "batch_stats": {"mean": np.zeros(3)}}
    base = array_store.key(variables, "clips-digest", 3, None)
    assert base == array_store.key(variables, "clips-digest", 3, None)
    assert base != array_store.key({**variables, "params": {"w": jnp.ones((3, 2))}}, "clips-digest", 3, None)
    assert base != array_store.key({**variables, "params": {"w": jnp.ones((2, 3)) * 2}}, "clips-digest", 3, None)
    assert base != array_store.key({**variables, "params": {"v": jnp.ones((2, 3))}}, "clips-digest", 3, None)
    assert base != array_store.key(variables, "clips-digest", 4, None)
    assert base != array_store.key(variables, "other-digest", 3, None)


def test_needs_disk_only_above_the_budget_and_only_with_a_folder(tmp_path):
    assert not array_store.needs_disk(10, 10, None, "cache")
    assert array_store.needs_disk(11, 10, str(tmp_path), "cache")
    with pytest.raises(ValueError, match="the cache needs .* no directory"):
        array_store.needs_disk(11, 10, None, "the cache")
