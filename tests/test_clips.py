"""Tests for merjax.data.clips: exact window, padding and mask indices."""

from __future__ import annotations

import numpy as np
import pytest

from merjax.data import clips


def test_sliding_windows_stride_one():
    expected = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    result = clips.sliding_windows(5, 3)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, expected)


def test_sliding_windows_aligns_a_last_window_to_the_end():
    expected = np.array([[0, 1, 2, 3], [3, 4, 5, 6], [5, 6, 7, 8]])
    np.testing.assert_array_equal(clips.sliding_windows(9, 4, stride=3), expected)


def test_sliding_windows_exact_stride_adds_no_extra_window():
    expected = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6]])
    np.testing.assert_array_equal(clips.sliding_windows(7, 3, stride=2), expected)


def test_sliding_windows_whole_clip():
    np.testing.assert_array_equal(clips.sliding_windows(4, 4, stride=2), [[0, 1, 2, 3]])


def test_sliding_windows_rejects_a_window_longer_than_the_clip():
    with pytest.raises(ValueError, match=r"window of 13 frames is longer than the clip \(11 frames\)"):
        clips.sliding_windows(11, 13)


@pytest.mark.parametrize("length,size,stride", [(5, 3, 1), (9, 4, 3), (7, 3, 2), (40, 13, 5), (13, 13, 4)])
def test_count_windows_matches_sliding_windows(length, size, stride):
    assert clips.count_windows(length, size, stride) == len(clips.sliding_windows(length, size, stride))


def test_count_windows_short_clip():
    assert clips.count_windows(3, 5, pad_short=True) == 1
    with pytest.raises(ValueError, match="window of 5 frames"):
        clips.count_windows(3, 5)


def test_windows_with_mask_long_clip_is_all_valid():
    indices, mask = clips.windows_with_mask(6, 4, stride=2, pad_short=True)
    np.testing.assert_array_equal(indices, [[0, 1, 2, 3], [2, 3, 4, 5]])
    assert mask.dtype == bool and mask.all() and mask.shape == (2, 4)


def test_windows_with_mask_pads_a_short_clip():
    indices, mask = clips.windows_with_mask(3, 5, pad_short=True)
    np.testing.assert_array_equal(indices, [[0, 1, 2, 2, 2]])
    np.testing.assert_array_equal(mask, [[True, True, True, False, False]])
    assert indices.dtype == np.int32


def test_windows_with_mask_without_padding_raises():
    with pytest.raises(ValueError, match=r"window of 5 frames is longer than the clip \(3 frames\)"):
        clips.windows_with_mask(3, 5, pad_short=False)


def test_pad_to_length_edge_and_zero():
    frames = np.arange(1, 4, dtype=np.uint8).reshape(3, 1, 1, 1)
    padded, mask = clips.pad_to_length(frames, 5)
    np.testing.assert_array_equal(padded.reshape(-1), [1, 2, 3, 3, 3])
    np.testing.assert_array_equal(mask, [True, True, True, False, False])
    zero_padded, _ = clips.pad_to_length(frames, 5, fill="zero")
    np.testing.assert_array_equal(zero_padded.reshape(-1), [1, 2, 3, 0, 0])
    assert padded.dtype == np.uint8 and padded.shape == (5, 1, 1, 1)


def test_pad_to_length_never_truncates():
    with pytest.raises(ValueError, match="clip has 6 frames, more than the padded length 4"):
        clips.pad_to_length(np.zeros((6, 2)), 4)


def test_fixed_length_modes():
    frames = np.arange(5)
    padded, mask = clips.fixed_length(frames, 7)
    np.testing.assert_array_equal(padded, [0, 1, 2, 3, 4, 4, 4])
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0, 0])
    sampled, mask = clips.fixed_length(frames, 3, mode="sample")
    np.testing.assert_array_equal(sampled, [0, 2, 4])
    assert mask.all()
    stretched, _ = clips.fixed_length(frames, 9, mode="sample")
    np.testing.assert_array_equal(stretched, [0, 1, 1, 2, 2, 3, 3, 4, 4])
    with pytest.raises(ValueError, match="mode must be"):
        clips.fixed_length(frames, 3, mode="crop")


def test_random_window_is_consecutive_and_inside():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        window = clips.random_window(20, 16, rng)
        assert window.dtype == np.int32 and window.shape == (16,)
        np.testing.assert_array_equal(np.diff(window), 1)
        assert 0 <= window[0] and window[-1] <= 19
        starts.add(int(window[0]))
    assert starts == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match=r"window of 16 frames is longer than the clip \(10 frames\)"):
        clips.random_window(10, 16, rng)
