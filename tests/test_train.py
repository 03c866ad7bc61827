"""Train stack: loss parity with PyTorch, schedules, eval aggregation, multi-device equality, resume."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from merjax.data import pipeline
from merjax.models import create_model
from merjax.train import losses, optim, sharding, steps
from merjax.train.loop import fit
from merjax.train.state import create_train_state, init_variables
from tests.conftest import make_clip_set, tiny_model_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_matches_torch_with_class_and_sample_weights(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(12, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, 12)
    class_weights = rng.uniform(0.2, 3.0, 4).astype(np.float32)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels), weight=torch.tensor(class_weights))
    got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), class_weights=class_weights)
    np.testing.assert_allclose(got, expected.item(), rtol=1e-6)
    # Per-sample weights equal to class_weight[label] are the same loss (how the pipeline weights).
    got_as_samples = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                          weights=jnp.asarray(class_weights[labels]))
    np.testing.assert_allclose(got_as_samples, expected.item(), rtol=1e-6)


def test_inverse_frequency_weights_and_empty_class_error():
    weights = losses.inverse_frequency_weights(np.array([10, 20, 40]))
    np.testing.assert_allclose(weights * np.array([10, 20, 40]), weights[0] * 10)
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[1\]"):
        losses.inverse_frequency_weights(np.array([3, 0, 2]))


def test_step_schedule_and_warmup():
    config = ml_collections.ConfigDict(dict(
        schedule="step", learning_rate=0.1, warmup_epochs=1, epochs=10, step_epochs=(4, 8), step_factor=0.1))
    schedule = optim.learning_rate_schedule(config, steps_per_epoch=10)
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(39), schedule(40),
                                schedule(80)], [0.0, 0.05, 0.1, 0.1, 0.01, 0.001], rtol=1e-5)
    config.schedule = "nope"
    with pytest.raises(ValueError, match="nope"):
        optim.learning_rate_schedule(config, 10)


def test_eval_step_averages_only_valid_windows():
    window_logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)), jnp.float32)

    def apply_fixed(variables, **inputs):  # a stand-in for a model that returns fixed window logits
        del variables, inputs
        return window_logits

    state = types.SimpleNamespace(apply_fn=apply_fixed, params={}, batch_stats={})
    window_mask = np.array([[True, True, False], [True, False, False]])
    out = steps.eval_step(state, {"frames": np.zeros(2), "window_mask": window_mask, "label": np.zeros(2)})
    log_probs = jax.nn.log_softmax(window_logits)
    np.testing.assert_allclose(out["log_probs"][0], (log_probs[0, 0] + log_probs[0, 1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out["log_probs"][1], log_probs[1, 0], rtol=1e-6)


def _fold_setup(clip_set, model_config, batch_size=4, window=4):
    model = create_model(model_config, clip_set.num_classes)
    samples = pipeline.window_samples(clip_set, np.arange(len(clip_set)), window, 2, pad_short=True)
    example = {"frames": np.zeros((batch_size, window, 16, 16, 3), np.uint8),
               "mask": np.ones((batch_size, window), bool)}
    variables = init_variables(model, example, jax.random.key(0))
    steps_per_epoch = len(samples) // batch_size
    tx = optax.adam(1e-2)
    state = create_train_state(model, variables, tx, jax.random.key(1))

    def batches(epoch):
        return pipeline.train_batches(clip_set, samples, batch_size=batch_size, seed=3, epoch=epoch,
                                      window_size=window, augmentation=pipeline.Augmentation(0.5, 5.0))
    return state, batches, steps_per_epoch


def _checkpointed_fit():
    """The initial state of a tiny fold and ``run(epochs, directory)``: ``fit`` from it with checkpoints there."""
    clip_set = make_clip_set(num_subjects=2, clips_per_class=1)
    mesh = sharding.data_mesh()
    train_step = sharding.jit_train_step(steps.train_step, mesh)
    initial, batches, _ = _fold_setup(clip_set, tiny_model_config())

    def run(epochs, directory):
        state = sharding.replicate(jax.tree.map(jnp.copy, initial), mesh)
        return fit(state, train_step=train_step, train_batches=batches, epochs=epochs, mesh=mesh,
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
    assert int(resumed.state.step) == int(uninterrupted.state.step)
    # Training changed the parameters: the comparison above is not vacuous.
    assert not np.allclose(jax.tree.leaves(initial.params)[0], jax.tree.leaves(resumed.state.params)[0])


def test_fit_selects_on_validation_only_when_asked():
    clip_set = make_clip_set(num_subjects=2, clips_per_class=1)
    mesh = sharding.data_mesh()
    state, batches, steps_per_epoch = _fold_setup(clip_set, tiny_model_config())
    scores = iter([0.2, 0.9, 0.1])
    fitted = fit(sharding.replicate(state, mesh), train_step=sharding.jit_train_step(steps.train_step, mesh),
                 train_batches=batches, epochs=3, mesh=mesh, evaluate=lambda s: {"uf1": next(scores)},
                 select="uf1")
    assert fitted.selected_epoch == 1
    assert int(fitted.state.step) == 2 * steps_per_epoch   # the state after epoch 1, not the last one
    with pytest.raises(ValueError, match="validation"):
        fit(state, train_step=None, train_batches=batches, epochs=1, mesh=mesh, select="uf1")


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np, optax
    assert jax.device_count() == 8, jax.devices()
    from merjax.models import create_model
    from merjax.train import sharding, steps
    from merjax.train.state import create_train_state, init_variables
    from tests.conftest import make_clip_set, tiny_model_config
    from merjax.data import pipeline

    clip_set = make_clip_set()
    samples = pipeline.window_samples(clip_set, np.arange(len(clip_set)), 4, 2, pad_short=True)
    batch = next(iter(pipeline.train_batches(clip_set, samples, batch_size=8, seed=0, epoch=0, window_size=4,
                                             augmentation=None, class_weights=np.array([1., 2., .5]))))
    model = create_model(tiny_model_config(), 3)
    variables = init_variables(model, batch, jax.random.key(0))
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.data_mesh(devices)
        state = sharding.replicate(create_train_state(model, variables, optax.sgd(0.1), jax.random.key(1)), mesh)
        step = sharding.jit_train_step(steps.train_step, mesh)
        sharded = sharding.shard_batch(batch, mesh)
        assert len(sharded["frames"].sharding.device_set) == len(devices)
        state, metrics = step(state, sharded)
        results.append((jax.device_get(state.params), jax.device_get(state.batch_stats), jax.device_get(metrics)))
    (p1, b1, m1), (p8, b8, m8) = results
    for a, b in zip(jax.tree.leaves((p1, b1)), jax.tree.leaves((p8, b8))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-6)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(variables["params"])))
    assert moved > 1e-4, moved
    print("OK", float(m1["loss"]), moved)
""")


def test_train_step_on_8_emulated_devices_equals_1_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


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
