"""Samplers and the batch contract: which samples a fold trains and evaluates on, and what reaches the model."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from merjax.data import batches, samplers
from merjax.errors import UserError
from tests.conftest import make_clip_set


def _targets(clip_set):
    return {"label": clip_set.labels}


def test_sliding_windows_cover_clips_and_name_a_short_clip():
    clip_set = make_clip_set(min_length=6, max_length=12)
    clips = np.arange(len(clip_set))
    sampler = samplers.SlidingWindows(window=5, train_stride=2, pad_short=False)
    rows = sampler.train_rows(clip_set, clips)
    assert set(rows[:, 0]) == set(clips.tolist())
    assert np.all(rows[:, 1] + 5 <= clip_set.lengths[rows[:, 0]])
    with pytest.raises(UserError, match=r"clip 's1_0_0'.*sampler.window=40.*pad_short"):
        samplers.SlidingWindows(window=40, pad_short=False).train_rows(clip_set, clips)
    padded = samplers.SlidingWindows(window=40, pad_short=True).train_rows(clip_set, clips)
    assert len(padded) == len(clip_set) and np.all(padded[:, 1] == 0)
    assert samplers.SlidingWindows(window=7).describe(clip_set, clips)["padded_short_clips"] == int(
        np.sum(clip_set.lengths < 7))


def test_frames_sampler_is_every_frame_and_reports_frame_level():
    clip_set = make_clip_set(min_length=3, max_length=5)
    sampler = samplers.Frames()
    rows = sampler.train_rows(clip_set, np.array([0, 2]))
    assert len(rows) == clip_set.lengths[0] + clip_set.lengths[2]
    inputs = sampler.load_train(clip_set, rows[1], np.random.default_rng(0))
    np.testing.assert_array_equal(inputs["frames"], clip_set.frames[0][1])
    assert set(inputs) == {"frames"} and sampler.sample_level == "frame"


def test_random_window_redraws_its_start_each_epoch_within_the_clip():
    clip_set = make_clip_set(num_subjects=1, clips_per_class=1, min_length=20, max_length=20)
    sampler = samplers.RandomWindow(window=4)
    rows = sampler.train_rows(clip_set, np.arange(len(clip_set)))
    assert len(rows) == len(clip_set) and np.all(rows[:, 1] == -1)
    starts = set()
    for seed in range(30):
        window = sampler.load_train(clip_set, rows[0], np.random.default_rng(seed))["frames"]
        start = [t for t in range(17) if np.array_equal(clip_set.frames[0][t:t + 4], window)]
        assert start, "the window is not 4 consecutive frames of the clip"
        starts.add(start[0])
    assert len(starts) > 5


def test_whole_clip_pads_to_the_longest_clip_and_masks():
    clip_set = make_clip_set(min_length=3, max_length=9)
    sampler = samplers.WholeClip()
    inputs, mask = sampler.load_eval(clip_set, np.array([1, 0]))
    length = samplers.eval_length(clip_set)
    assert inputs["frames"].shape[0] == length and bool(mask)
    assert inputs["mask"].sum() == clip_set.lengths[1] and inputs["mask"][:clip_set.lengths[1]].all()
    np.testing.assert_array_equal(inputs["frames"][:clip_set.lengths[1]], clip_set.frames[1])
    assert not inputs["frames"][clip_set.lengths[1]:].any()


def test_clip_image_reads_one_image_stream_and_missing_streams_are_named():
    clip_set = make_clip_set(min_length=3, max_length=5)
    images = [frames[-1].astype(np.float32) - frames[0] for frames in clip_set.frames]
    with_images = clip_set.with_streams({**clip_set.streams, "dynamic_image": images})
    sampler = samplers.ClipImage()
    inputs = sampler.load_train(with_images, np.array([2, 0]), np.random.default_rng(0))
    np.testing.assert_array_equal(inputs["dynamic_image"], images[2])
    with pytest.raises(UserError, match=r"stream\(s\) \['dynamic_image'\].*clip_ops"):
        sampler.check(clip_set)


def test_variants_are_drawn_in_training_and_version_zero_evaluated():
    clip_set = make_clip_set(num_subjects=1, clips_per_class=1, min_length=4, max_length=4)
    versions = [np.stack([np.full((4, 2), k, np.float32) for k in range(3)]) for _ in range(len(clip_set))]
    features = clip_set.with_streams({"features": [v[0] for v in versions]}, {"features": versions})
    sampler = samplers.WholeClip(streams=("features",))
    drawn = {float(sampler.load_train(features, np.array([0, 0]), np.random.default_rng(s))["features"][0, 0])
             for s in range(20)}
    assert drawn == {0.0, 1.0, 2.0}
    assert float(sampler.load_eval(features, np.array([0, 0]))[0]["features"][0, 0]) == 0.0


def test_unknown_sampler_is_named():
    with pytest.raises(UserError, match=r"--config.sampler.name.*sliding_windows"):
        samplers.create_sampler({"name": "everything"})
    sampler = samplers.create_sampler({"name": "sliding_windows", "window": 6, "streams": ["frames"], "other": 1})
    assert sampler == samplers.SlidingWindows(window=6)


def test_train_batches_follow_the_batch_contract_deterministically_per_epoch():
    clip_set = make_clip_set(min_length=3, max_length=9)
    sampler = samplers.SlidingWindows(window=6, train_stride=2,
                                      augment=batches.Augmentation(flip_prob=0.5, max_rotation=8.0))
    rows = sampler.train_rows(clip_set, np.arange(len(clip_set)))
    table = np.array([1.0, 2.0, 3.0], np.float32)

    def epoch(e):
        return list(batches.train_batches(sampler, clip_set, rows, _targets(clip_set), weight_tables={"label": table},
                                          batch_size=4, seed=7, epoch=e))

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert len(first) == len(rows) // 4
    for a, b in zip(first, again):
        for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(leaf_a, leaf_b)
    assert any(not np.array_equal(a["inputs"]["frames"], b["inputs"]["frames"]) for a, b in zip(first, other))
    batch = first[0]
    assert set(batch) == {"inputs", "targets", "weights", "masks"}
    assert set(batch["inputs"]) == {"frames", "mask"}        # only what the model takes
    assert batch["inputs"]["frames"].shape == (4, 6, 16, 16, 3) and batch["inputs"]["mask"].shape == (4, 6)
    np.testing.assert_array_equal(batch["weights"]["label"], table[batch["targets"]["label"]])
    assert batch["masks"]["label"].all()
    for mask in np.concatenate([b["inputs"]["mask"] for b in first]):   # valid steps left-aligned
        valid = int(mask.sum())
        assert mask[:valid].all() and not mask[valid:].any()


def test_multi_column_targets_get_per_column_weights():
    clip_set = make_clip_set(min_length=3, max_length=4)
    regions = np.stack([clip_set.labels, (clip_set.labels + 1) % 3], axis=1)     # [clips, 2]
    table = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]], np.float32)
    sampler = samplers.WholeClip()
    rows = sampler.train_rows(clip_set, np.arange(len(clip_set)))
    batch = next(iter(batches.train_batches(sampler, clip_set, rows, {"regions": regions},
                                            weight_tables={"regions": table}, batch_size=4, seed=0, epoch=0)))
    values = batch["targets"]["regions"]
    assert values.shape == (4, 2)
    np.testing.assert_array_equal(batch["weights"]["regions"], np.stack([table[0][values[:, 0]],
                                                                        table[1][values[:, 1]]], axis=1))


def test_eval_batches_pad_slots_and_share_windows():
    clip_set = make_clip_set(num_subjects=1, clips_per_class=1, min_length=7, max_length=11)
    clips = np.arange(len(clip_set))
    sampler = samplers.SlidingWindows(window=4, eval_stride=2)
    produced = list(batches.eval_batches(sampler, clip_set, clips, batch_size=2))
    groups = np.concatenate([g for _, g in produced])
    np.testing.assert_array_equal(groups[groups >= 0], clips)
    for batch, batch_groups in produced:
        assert set(batch) == {"inputs", "masks"}
        for slot, clip in enumerate(batch_groups):
            if clip < 0:
                assert not batch["masks"]["label"][slot].any()
                continue
            length = clip_set.lengths[clip]
            assert batch["inputs"]["mask"][slot].sum() == length
            windows = batch["inputs"]["windows"][slot][batch["masks"]["label"][slot]]
            assert windows.max() == length - 1 and windows[0, 0] == 0
            np.testing.assert_array_equal(batch["inputs"]["frames"][slot, :length], clip_set.frames[clip])
