"""The learning rate lives in the train state: unit-rate optimisers scaled by a schedule of the fractional epoch
give exactly the optax optimisers with the step schedule baked in."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from merjax.train import optim
from merjax.train.state import TrainState

STEPS_PER_EPOCH = 4
EPOCHS = 4
SCHEDULES = {
    "constant": dict(schedule="constant"),
    "cosine_with_warmup": dict(schedule="cosine", warmup_epochs=1.0),
    "step": dict(schedule="step", step_epochs=(1.5, 3.0), step_factor=0.2),
    "step_with_warmup": dict(schedule="step", warmup_epochs=0.5, step_epochs=(2.0,), step_factor=0.1),
}


def baked_optimizer(config, steps_per_epoch: int, frozen=None) -> optax.GradientTransformation:
    """The optimiser as merjax built it before: the step schedule inside optax (the reference)."""
    base = config.learning_rate
    warmup_steps = int(config.get("warmup_epochs", 0) * steps_per_epoch)
    total_steps = max(config.epochs * steps_per_epoch, 1)
    if config.schedule == "constant":
        schedule = optax.constant_schedule(base)
    elif config.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(base, decay_steps=max(total_steps - warmup_steps, 1))
    else:
        schedule = optax.piecewise_constant_schedule(
            base, {int(epoch * steps_per_epoch) - warmup_steps: config.step_factor for epoch in config.step_epochs})
    if warmup_steps:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, base, warmup_steps), schedule], [warmup_steps])
    if config.optimizer == "adam":
        optimizer = optax.adam(schedule)
    elif config.optimizer == "adamw":
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        optimizer = optax.sgd(schedule, momentum=config.momentum)
    transforms = [optax.clip_by_global_norm(config.grad_clip)]
    if config.optimizer == "sgd":
        transforms.append(optax.add_decayed_weights(config.weight_decay))
    trainable = optax.chain(*transforms, optimizer)
    if frozen is None:
        return trainable
    labels = jax.tree.map(lambda is_frozen: "frozen" if is_frozen else "trainable", frozen)
    return optax.multi_transform({"trainable": trainable, "frozen": optax.set_to_zero()}, labels)


def train_config(optimizer: str, schedule: str) -> ml_collections.ConfigDict:
    defaults = dict(warmup_epochs=0.0, step_epochs=(), step_factor=0.1)
    return ml_collections.ConfigDict(dict(
        optimizer=optimizer, learning_rate=0.05, momentum=0.9, weight_decay=0.1, grad_clip=2.0, epochs=EPOCHS,
        **{**defaults, **SCHEDULES[schedule]}))


def initial_params():
    rng = np.random.default_rng(0)
    return {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=(2,)), jnp.float32)},
            "frozen_layer": {"kernel": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}}


def gradients(params, step: int):
    """Gradients of a step-dependent non-quadratic loss, so that Adam's moments and momentum vary."""
    x = jnp.sin(jnp.arange(6, dtype=jnp.float32).reshape(2, 3) + step)

    def loss(p):
        hidden = jnp.tanh(x @ p["dense"]["kernel"] + p["dense"]["bias"])
        return jnp.sum((hidden @ p["frozen_layer"]["kernel"]) ** 2) + jnp.sum(hidden)
    return jax.grad(loss)(params)


@pytest.mark.parametrize("optimizer,schedule", list(itertools.product(optim.OPTIMIZERS, SCHEDULES)))
@pytest.mark.parametrize("with_frozen", [False, True])
def test_state_scaled_unit_optimizer_equals_baked_schedule(optimizer, schedule, with_frozen):
    config = train_config(optimizer, schedule)
    params = initial_params()
    frozen = {"dense": {"kernel": False, "bias": False}, "frozen_layer": {"kernel": True}} if with_frozen else None
    reference_tx = baked_optimizer(config, STEPS_PER_EPOCH, frozen)
    reference, reference_state = params, reference_tx.init(params)
    state = TrainState.create(apply_fn=None, params=params, tx=optim.make_optimizer(config, frozen=frozen),
                              batch_stats={}, rng=jax.random.key(0),
                              steps_per_epoch=jnp.asarray(STEPS_PER_EPOCH, jnp.int32),
                              learning_rate_fn=optim.learning_rate_schedule(config))
    apply_gradients = jax.jit(lambda s, g: s.apply_gradients(grads=g))
    for step in range(EPOCHS * STEPS_PER_EPOCH + 2):   # past the end: cosine at 0
        updates, reference_state = reference_tx.update(gradients(reference, step), reference_state, reference)
        reference = optax.apply_updates(reference, updates)
        state = apply_gradients(state, gradients(state.params, step))
        for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(reference)[0],
                                     jax.tree.leaves(state.params)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"step {step} {path}")
    assert int(state.step) == EPOCHS * STEPS_PER_EPOCH + 2
    moved = np.abs(np.asarray(state.params["dense"]["kernel"]) - np.asarray(params["dense"]["kernel"])).max()
    assert moved > 1e-3   # the comparison is not between two unmoved states
    if with_frozen:
        np.testing.assert_array_equal(state.params["frozen_layer"]["kernel"], params["frozen_layer"]["kernel"])


def test_schedule_values_by_fractional_epoch():
    schedule = optim.EpochSchedule(0.1, "step", epochs=10, warmup_epochs=1, step_epochs=(4, 8), step_factor=0.1)
    np.testing.assert_allclose([schedule(e) for e in (0.0, 0.5, 1.0, 3.9, 4.0, 8.0)],
                               [0.0, 0.05, 0.1, 0.1, 0.01, 0.001], rtol=1e-5)
    cosine = optim.EpochSchedule(1.0, "cosine", epochs=4, warmup_epochs=2)
    np.testing.assert_allclose([cosine(e) for e in (1.0, 2.0, 3.0, 4.0, 5.0)], [0.5, 1.0, 0.5, 0.0, 0.0],
                               atol=1e-6)


def test_equal_settings_give_equal_schedules_and_one_tree_structure():
    """Folds built from one config share a tree structure whatever their epoch length (stackable, one jit)."""
    config = train_config("adam", "cosine_with_warmup")
    tx = optim.make_optimizer(config)
    states = [TrainState.create(apply_fn=None, params=initial_params(), tx=tx, batch_stats={},
                                rng=jax.random.key(0), steps_per_epoch=jnp.asarray(n, jnp.int32),
                                learning_rate_fn=optim.learning_rate_schedule(config)) for n in (3, 7)]
    assert states[0].learning_rate_fn == states[1].learning_rate_fn
    assert hash(states[0].learning_rate_fn) == hash(states[1].learning_rate_fn)
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])


def test_bad_schedules_are_refused_by_name():
    with pytest.raises(ValueError, match="nope"):
        optim.EpochSchedule(0.1, "nope")
    with pytest.raises(ValueError, match="warmup_epochs=3"):
        optim.EpochSchedule(0.1, "cosine", epochs=3, warmup_epochs=3)
    with pytest.raises(ValueError, match="rmsprop"):
        optim.make_optimizer(ml_collections.ConfigDict(dict(optimizer="rmsprop")))
