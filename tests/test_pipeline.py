"""Input pipeline: loading prepared data, windows, batches, and clear errors on bad input."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest

from merjax.errors import UserError
from merjax.data import pipeline
from tests.conftest import make_clip_set


def test_load_clips_reads_every_clip_resized(tiny_dataset_dir):
    clip_set = pipeline.load_clips(tiny_dataset_dir, image_size=16)
    assert len(clip_set) > 0 and clip_set.num_classes == 3
    assert all(f.shape[1:] == (16, 16, 3) and f.dtype == np.uint8 for f in clip_set.frames)
    assert all(len(f) == len(l) for f, l in zip(clip_set.frames, clip_set.landmarks))
    assert set(np.unique(clip_set.labels)) == {0, 1, 2}
    assert len(set(clip_set.clip_ids)) == len(clip_set)


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(UserError, match="no prepared dataset"):
        pipeline.load_clips(str(tmp_path / "nowhere"), 16)


def test_corrupt_dataset_names_the_record(tiny_dataset_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset_dir, broken)
    for shard in glob.glob(str(broken / "*.array_record*")):
        size = os.path.getsize(shard)
        with open(shard, "r+b") as f:   # overwrite the middle of every shard with garbage
            f.seek(size // 3)
            f.write(b"\x00garbage" * (size // 40))
    with pytest.raises(ValueError, match=r"broken.*record \d+ of split .train. is unreadable"):
        pipeline.load_clips(str(broken), 16)


def test_window_samples_cover_clips_and_name_short_clip():
    clip_set = make_clip_set(min_length=6, max_length=12)
    samples = pipeline.window_samples(clip_set, np.arange(len(clip_set)), 5, 2, pad_short=False)
    assert set(samples[:, 0]) == set(range(len(clip_set)))
    assert np.all(samples[:, 1] + 5 <= clip_set.lengths[samples[:, 0]])
    with pytest.raises(ValueError, match=r"clip 's1_0_0'.*longer"):
        pipeline.window_samples(clip_set, np.arange(len(clip_set)), 40, 1, pad_short=False)
    padded = pipeline.window_samples(clip_set, np.arange(len(clip_set)), 40, 1, pad_short=True)
    assert len(padded) == len(clip_set) and np.all(padded[:, 1] == 0)


def test_train_batches_are_deterministic_per_epoch_and_masked():
    clip_set = make_clip_set(min_length=3, max_length=9)
    samples = pipeline.window_samples(clip_set, np.arange(len(clip_set)), 6, 2, pad_short=True)

    def epoch(e):
        return list(pipeline.train_batches(clip_set, samples, batch_size=4, seed=7, epoch=e, window_size=6,
                                           augmentation=pipeline.Augmentation(0.5, 8.0),
                                           class_weights=np.array([1.0, 2.0, 3.0], np.float32)))

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert len(first) == len(samples) // 4
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["frames"], b["frames"]) for a, b in zip(first, other))
    batch = first[0]
    assert batch["frames"].shape == (4, 6, 16, 16, 3) and batch["mask"].shape == (4, 6)
    np.testing.assert_array_equal(batch["sample_weight"], np.array([1.0, 2.0, 3.0])[batch["label"]])
    # Short clips: valid steps left-aligned, then masked padding.
    for mask in np.concatenate([b["mask"] for b in first]):
        valid = int(mask.sum())
        assert mask[:valid].all() and not mask[valid:].any()


def test_clip_eval_batches_pad_slots_and_windows():
    clip_set = make_clip_set(num_subjects=1, clips_per_class=1, min_length=7, max_length=11)
    clips = np.arange(len(clip_set))
    batches = list(pipeline.clip_eval_batches(clip_set, clips, batch_size=2, window_size=4, stride=2,
                                              pad_short=True, max_length=pipeline.eval_length(clip_set)))
    indices = np.concatenate([i for _, i in batches])
    np.testing.assert_array_equal(indices[indices >= 0], clips)
    for batch, batch_indices in batches:
        for slot, clip in enumerate(batch_indices):
            if clip < 0:
                assert batch["sample_weight"][slot] == 0 and not batch["window_mask"][slot].any()
                continue
            length = clip_set.lengths[clip]
            assert batch["mask"][slot].sum() == length
            windows = batch["windows"][slot][batch["window_mask"][slot]]
            assert windows.max() == length - 1 and windows[0, 0] == 0
            np.testing.assert_array_equal(batch["frames"][slot, :length], clip_set.frames[clip])
