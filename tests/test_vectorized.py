"""Folds trained together (vmapped over stacked states) end where sequential ``loop.fit`` runs end."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merjax.train import optim, sharding, steps, vectorized
from merjax.train.loop import fit
from tests import tiny_training as tiny

STEPS_PER_EPOCH = (2, 5, 3)
EPOCHS = 3
SELECT = "wobble"


def validation(mesh, seed: int):
    """A fold's evaluate: NLL on its own validation batch, and a metric that rises and falls with it
    (``wobble``), so that selection picks epochs other than the last."""
    eval_step = sharding.jit_eval_step(steps.eval_step, mesh)
    val_batch = tiny.batch(np.random.default_rng([seed, 99]), batch_size=16)

    def evaluate(state):
        log_probs = np.asarray(eval_step(state, sharding.shard_batch(val_batch, mesh))["log_probs"])
        nll = -float(np.mean(log_probs[np.arange(16), val_batch["targets"]["label"]]))
        return {"nll": nll, SELECT: float(np.cos(40 * nll))}
    return evaluate


def folds(mesh):
    """Three folds of different epoch lengths: initial states, batch sources, evaluates."""
    states = [tiny.initial_state(n, seed=fold) for fold, n in enumerate(STEPS_PER_EPOCH)]
    batches = [tiny.fold_batches(10 + fold, n) for fold, n in enumerate(STEPS_PER_EPOCH)]
    return states, batches, [validation(mesh, fold) for fold in range(len(STEPS_PER_EPOCH))]


def fit_together(mesh, epochs=EPOCHS, checkpoint_dir=None, select=SELECT):
    states, batches, evaluate = folds(mesh)
    return vectorized.fit_folds(states, train_step=tiny.TRAIN_STEP, train_batches=batches,
                                steps_per_epoch=STEPS_PER_EPOCH, epochs=epochs, mesh=mesh, evaluate=evaluate,
                                select=select, checkpoint_dir=checkpoint_dir)


def assert_trees_close(a, b, **tolerance):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path), **tolerance)


def on_host(tree):
    """``tree`` as numpy arrays (PRNG keys as their key data)."""
    return jax.device_get(jax.tree.map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree))


@pytest.fixture(scope="module")
def mesh():
    return sharding.data_mesh()


@pytest.fixture(scope="module")
def together(mesh):
    return fit_together(mesh)


def test_folds_trained_together_equal_sequential_fits(mesh, together):
    states, batches, evaluate = folds(mesh)
    train_step = sharding.jit_train_step(tiny.TRAIN_STEP, mesh)
    for fold, (state, fold_batches, fold_evaluate) in enumerate(zip(states, batches, evaluate)):
        alone = fit(sharding.replicate(state, mesh), train_step=train_step, train_batches=fold_batches,
                    epochs=EPOCHS, mesh=mesh, evaluate=fold_evaluate, select=SELECT)
        result = together[fold]
        assert result.selected_epoch == alone.selected_epoch, fold
        assert int(result.state.step) == int(alone.state.step) == (alone.selected_epoch + 1) * STEPS_PER_EPOCH[fold]
        assert_trees_close(alone.state.params, result.state.params, rtol=1e-5, atol=1e-5)
        assert_trees_close(alone.state.batch_stats, result.state.batch_stats, rtol=1e-5, atol=1e-5)
        assert_trees_close(alone.state.opt_state, result.state.opt_state, rtol=1e-5, atol=1e-5)
        assert [r["epoch"] for r in result.history] == list(range(EPOCHS))
        for mine, theirs in zip(result.history, alone.history):
            assert mine.keys() == theirs.keys()
            for key in mine.keys() - {"seconds", "epoch"}:
                np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # Not vacuous: selection picks an earlier epoch somewhere, and training moved every fold.
    assert {r.selected_epoch for r in together} != {EPOCHS - 1}
    for state, result in zip(states, together):
        assert not np.allclose(state.params["Dense_0"]["kernel"], result.state.params["Dense_0"]["kernel"])


def test_a_finished_fold_is_not_moved_by_padding_steps(mesh):
    """A padding step (inactive fold, zero batch) leaves every leaf of that fold bit for bit as it was."""
    states, _, _ = folds(mesh)
    # Mid-epoch (past the warm-up's zero learning rate at step 0), so that the active folds move.
    stacked = vectorized.stack([state.replace(step=3) for state in states], mesh)
    before = on_host(stacked)
    real = tiny.batch(np.random.default_rng(0))
    stacked_batch = jax.tree.map(lambda *leaves: np.stack(leaves), real, jax.tree.map(np.zeros_like, real), real)
    step = vectorized.jit_fold_step(tiny.TRAIN_STEP, mesh)
    after, _ = step(stacked, vectorized.shard_fold_batch(stacked_batch, mesh), np.array([True, False, True]))
    after = on_host(after)
    unchanged = jax.tree.map(lambda x: x[1], before)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(unchanged)[0],
                            jax.tree.leaves(jax.tree.map(lambda x: x[1], after))):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    assert after.step.tolist() == [4, 3, 4]
    for fold in (0, 2):
        assert not np.allclose(after.params["Dense_0"]["kernel"][fold], before.params["Dense_0"]["kernel"][fold])
        assert not np.allclose(after.batch_stats["BatchNorm_0"]["mean"][fold],
                               before.batch_stats["BatchNorm_0"]["mean"][fold])


def test_resumed_folds_end_as_uninterrupted_ones(mesh, together, tmp_path):
    run = str(tmp_path / "run")
    fit_together(mesh, epochs=2, checkpoint_dir=run)     # "interrupted" after its second epoch's checkpoint
    resumed = fit_together(mesh, checkpoint_dir=run)
    for fold, (result, uninterrupted) in enumerate(zip(resumed, together)):
        assert result.resumed_from == 1 and uninterrupted.resumed_from is None
        assert [r["epoch"] for r in result.history] == list(range(EPOCHS))
        assert result.selected_epoch == uninterrupted.selected_epoch, fold
        assert int(result.state.step) == int(uninterrupted.state.step)
        assert_trees_close(uninterrupted.state.params, result.state.params, rtol=1e-6, atol=1e-7)
        assert_trees_close(uninterrupted.state.batch_stats, result.state.batch_stats, rtol=1e-6, atol=1e-7)
        for mine, theirs in zip(result.history, uninterrupted.history):
            np.testing.assert_allclose(mine[f"val_{SELECT}"], theirs[f"val_{SELECT}"], rtol=1e-5, atol=1e-6)


def test_folds_that_cannot_be_trained_together_are_refused_in_one_line(mesh):
    states, batches, evaluate = folds(mesh)
    kwargs = dict(train_step=tiny.TRAIN_STEP, train_batches=batches, epochs=1, mesh=mesh)
    other_tx = states[1].replace(tx=optim.make_optimizer(tiny.TRAIN_CONFIG))
    with pytest.raises(ValueError, match=r"fold 1's train state has another tx .* one optimiser object"):
        vectorized.fit_folds([states[0], other_tx, states[2]], steps_per_epoch=STEPS_PER_EPOCH, **kwargs)
    with pytest.raises(ValueError, match=r"fold 2's state has steps_per_epoch 3 but steps_per_epoch\[2\] is 4"):
        vectorized.fit_folds(states, steps_per_epoch=(2, 5, 4), **kwargs)
    with pytest.raises(ValueError, match=r"select='wobble' needs an evaluate .* \(fold 1 has none\)"):
        vectorized.fit_folds(states, steps_per_epoch=STEPS_PER_EPOCH, evaluate=[evaluate[0], None, evaluate[2]],
                             select=SELECT, **kwargs)
    short = [batches[0], tiny.fold_batches(0, 4), batches[2]]
    with pytest.raises(ValueError, match=r"fold 1's train_batches\(0\) gave 4 batches, but its steps_per_epoch is 5"):
        vectorized.fit_folds(states, steps_per_epoch=STEPS_PER_EPOCH, **{**kwargs, "train_batches": short})

    def wider(epoch):
        for batch in batches[1](epoch):
            yield {**batch, "inputs": {"features": np.zeros((4, tiny.NUM_FEATURES), np.float32)}}
    with pytest.raises(ValueError, match=r"fold 1's batch 0 of epoch 0 has \['inputs'\]\['features'\] of shape "
                                         r"\(4, 6\).*one batch size"):
        vectorized.fit_folds(states, steps_per_epoch=STEPS_PER_EPOCH,
                             **{**kwargs, "train_batches": [batches[0], wider, batches[2]]})


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from merjax.train import sharding, vectorized
    from tests import tiny_training as tiny

    counts = (2, 3)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.data_mesh(devices)
        stacked = next(iter(tiny.fold_batches(0, 1)(0)))
        stacked = jax.tree.map(lambda x: np.stack([x, x]), stacked)
        placed = vectorized.shard_fold_batch(stacked, mesh)["inputs"]["features"]
        # Each device holds both folds' rows of its own slice of the batch.
        rows = tiny.BATCH_SIZE // len(devices)
        shards = placed.addressable_shards
        assert len({shard.device for shard in shards}) == len(devices)
        assert sorted((shard.index[1].start or 0, shard.index[1].stop or tiny.BATCH_SIZE) for shard in shards) == \\
            [(i * rows, (i + 1) * rows) for i in range(len(devices))]
        assert all(shard.data.shape == (2, rows, tiny.NUM_FEATURES) for shard in shards)
        states = [tiny.initial_state(n, seed=fold) for fold, n in enumerate(counts)]
        fitted = vectorized.fit_folds(states, train_step=tiny.TRAIN_STEP, steps_per_epoch=counts, epochs=2, mesh=mesh,
                                      train_batches=[tiny.fold_batches(5 + f, n) for f, n in enumerate(counts)])
        results.append([jax.device_get((r.state.params, r.state.batch_stats)) for r in fitted])
        assert all(len(r.state.step.sharding.device_set) == len(devices) for r in fitted)
    for one, eight in zip(*results):
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print("OK")
""")


def test_folds_trained_together_on_8_emulated_devices_equal_1_device():
    assert "OK" in tiny.run_on_emulated_devices(MULTI_DEVICE_SCRIPT)
