"""Train stack: eval aggregation, multi-device data parallelism that is really split, fit with selection and resume.

Loss parity with PyTorch lives in test_losses.py, optimisers and schedules in
test_optim.py, folds trained together in test_vectorized.py.
"""

from __future__ import annotations

import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merjax.train import sharding, steps
from merjax.train.loop import fit
from tests import tiny_training as tiny

STEPS_PER_EPOCH = 3


def test_eval_step_averages_only_valid_windows():
    window_logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)), jnp.float32)

    def apply_fixed(variables, **inputs):  # a stand-in for a model that returns fixed window logits
        del variables, inputs
        return window_logits

    state = types.SimpleNamespace(apply_fn=apply_fixed, params={}, batch_stats={})
    window_mask = np.array([[True, True, False], [True, False, False]])
    out = steps.eval_step(state, {"inputs": {"frames": np.zeros(2)}, "targets": {"label": np.zeros(2, np.int32)},
                                  "masks": {"label": window_mask}})
    log_probs = jax.nn.log_softmax(window_logits)
    np.testing.assert_allclose(out["log_probs"][0], (log_probs[0, 0] + log_probs[0, 1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out["log_probs"][1], log_probs[1, 0], rtol=1e-6)


def _checkpointed_fit():
    """The initial state of a tiny fold and ``run(epochs, directory)``: ``fit`` from it with checkpoints there."""
    mesh = sharding.data_mesh()
    train_step = sharding.jit_train_step(tiny.TRAIN_STEP, mesh)
    initial = tiny.initial_state(STEPS_PER_EPOCH)

    def run(epochs, directory):
        return fit(sharding.replicate(initial, mesh), train_step=train_step,
                   train_batches=tiny.fold_batches(3, STEPS_PER_EPOCH), epochs=epochs, mesh=mesh,
                   checkpoint_dir=str(directory))

    return initial, run


def test_interrupted_run_resumed_from_checkpoint_ends_with_same_parameters(tmp_path):
    initial, run = _checkpointed_fit()
    uninterrupted = run(3, tmp_path / "a")
    run(2, tmp_path / "b")                    # "interrupted" after its second epoch's checkpoint
    resumed = run(3, tmp_path / "b")
    assert resumed.resumed_from == 1 and uninterrupted.resumed_from is None
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    for a, b in zip(jax.tree.leaves(uninterrupted.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(uninterrupted.state.batch_stats), jax.tree.leaves(resumed.state.batch_stats)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(resumed.state.step) == int(uninterrupted.state.step) == 3 * STEPS_PER_EPOCH
    # Training changed the parameters: the comparison above is not vacuous.
    assert not np.allclose(initial.params["Dense_0"]["kernel"], resumed.state.params["Dense_0"]["kernel"])


def test_fit_selects_on_validation_only_when_asked():
    mesh = sharding.data_mesh()
    scores = iter([0.2, 0.9, 0.1])
    fitted = fit(sharding.replicate(tiny.initial_state(STEPS_PER_EPOCH), mesh),
                 train_step=sharding.jit_train_step(tiny.TRAIN_STEP, mesh),
                 train_batches=tiny.fold_batches(3, STEPS_PER_EPOCH), epochs=3, mesh=mesh,
                 evaluate=lambda s: {"uf1": next(scores)}, select="uf1")
    assert fitted.selected_epoch == 1
    assert int(fitted.state.step) == 2 * STEPS_PER_EPOCH   # the state after epoch 1, not the last one
    with pytest.raises(ValueError, match="validation"):
        fit(None, train_step=None, train_batches=None, epochs=1, mesh=mesh, select="uf1")


# One train step on 8 emulated CPU devices against the same step on 1. Equal results alone prove nothing
# (XLA keeps a jitted program's meaning under any sharding, and a batch left whole on one device also
# agrees), so the script also checks that the batch really is split (one row range per device), that the
# compiled program takes it split and the state replicated and reduces across devices, and that a step
# without that reduction (per-device gradients and BatchNorm statistics) differs by far more than the
# tolerance of the comparison.
MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    assert jax.device_count() == 8, jax.devices()
    from merjax.train import sharding
    from tests import tiny_training as tiny

    batch = tiny.batch(np.random.default_rng(0), batch_size=16)
    initial = tiny.initial_state(steps_per_epoch=4).replace(step=5)   # past the warm-up: a non-zero learning rate

    def run(step, mesh):
        state, metrics = step(sharding.replicate(initial, mesh), sharding.shard_batch(batch, mesh))
        return jax.device_get((state.params, state.batch_stats, state.opt_state, metrics))

    def differences(a, b):
        return [float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]

    one_device = sharding.data_mesh(jax.devices()[:1])
    mesh = sharding.data_mesh()
    assert one_device.size == 1 and mesh.size == 8
    reference = run(sharding.jit_train_step(tiny.TRAIN_STEP, one_device), one_device)

    # The batch is split: each of the 8 devices holds its own 2 of the 16 rows of every entry.
    sharded = sharding.shard_batch(batch, mesh)
    for leaf in jax.tree.leaves(sharded):
        shards = leaf.addressable_shards
        assert len({shard.device for shard in shards}) == 8, leaf.sharding
        assert sorted((shard.index[0].start, shard.index[0].stop) for shard in shards) == \\
            [(2 * i, 2 * i + 2) for i in range(8)], [shard.index for shard in shards]
    step = sharding.jit_train_step(tiny.TRAIN_STEP, mesh)
    compiled = step.lower(sharding.replicate(initial, mesh), sharded).compile()
    state_in, batch_in = compiled.input_shardings[0]
    assert all(s.is_fully_replicated for s in jax.tree.leaves(state_in))
    assert not any(s.is_fully_replicated for s in jax.tree.leaves(batch_in))
    assert "all-reduce" in compiled.as_text()        # gradients and batch statistics summed over the devices
    state, _ = step(sharding.replicate(initial, mesh), sharded)
    assert all(len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated
               for leaf in jax.tree.leaves(state.params))

    eight_devices = run(step, mesh)
    agreement = max(differences(reference, eight_devices))
    assert agreement < 1e-5, agreement

    # The same step per device on its own 2 rows, nothing reduced: what a sharding bug would compute.
    unsynchronised = jax.jit(jax.shard_map(tiny.TRAIN_STEP, mesh=mesh, in_specs=(P(), P(sharding.DATA_AXIS)),
                                           out_specs=(P(), P()), check_vma=False))
    disagreement = max(differences(reference, run(unsynchronised, mesh)))
    assert disagreement > 1e-2, disagreement
    moved = max(differences(reference[0], jax.device_get(initial.params)))
    assert moved > 1e-3, moved
    print("OK", agreement, disagreement, moved)
""")


def test_train_step_on_8_emulated_devices_is_split_and_equals_1_device():
    assert "OK" in tiny.run_on_emulated_devices(MULTI_DEVICE_SCRIPT)


def test_batch_size_must_divide_devices():
    mesh = sharding.data_mesh()
    sharding.check_batch_size(4 * mesh.size, mesh)
    if mesh.size > 1:
        with pytest.raises(ValueError, match="not divisible"):
            sharding.check_batch_size(mesh.size + 1, mesh)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one_with_one_line(tmp_path, caplog):
    _, run = _checkpointed_fit()
    uninterrupted = run(3, tmp_path / "a")
    run(2, tmp_path / "b")                    # checkpoints of epochs 0 and 1
    damaged = 0
    for path in (tmp_path / "b" / "1").rglob("*"):   # a crash mid-write: every file of the latest one cut short
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
            damaged += 1
    assert damaged
    with caplog.at_level("WARNING"):
        resumed = run(3, tmp_path / "b")
    assert resumed.resumed_from == 0
    assert len(resumed.notes) == 2 and "epoch 2" in resumed.notes[0] and "unreadable" in resumed.notes[0]
    assert all("\n" not in note for note in resumed.notes)
    assert any("unreadable" in record.getMessage() for record in caplog.records)
    for a, b in zip(jax.tree.leaves(uninterrupted.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
