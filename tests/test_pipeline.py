"""Input pipeline, loading: prepared data into a ClipSet, and clear errors on bad input."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest

from merjax.errors import UserError
from merjax.data import pipeline


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
