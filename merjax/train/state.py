"""Train state: parameters, optimiser state, BatchNorm statistics, a dropout key and the learning-rate schedule."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm running statistics, the base dropout key and the learning rate.

    The dropout key of a step is ``fold_in(rng, step)``, so a resumed run draws
    the same dropout masks as an uninterrupted one.

    The learning rate is a function of the fractional epoch, not baked into
    ``tx``: ``tx`` works at learning rate 1 (``merjax.train.optim.make_optimizer``)
    and ``apply_gradients`` scales its update by
    ``learning_rate_fn(step / steps_per_epoch)``. ``steps_per_epoch`` is an array
    leaf and ``learning_rate_fn`` a static field compared by value, so folds of
    different lengths share one tree structure: one jitted step, and stackable
    for ``merjax.train.vectorized.fit_folds``.
    """

    batch_stats: Any
    rng: jax.Array
    steps_per_epoch: jax.Array                                              # int32 scalar
    learning_rate_fn: Callable[[jax.Array], jax.Array] = struct.field(pytree_node=False)

    def apply_gradients(self, *, grads: Any, **kwargs: Any) -> "TrainState":
        """One optimiser update scaled by the learning rate of the current fractional epoch.

        The scale is the last linear factor of the update, as optax applies a
        learning rate (after Adam's normalisation, AdamW's decoupled decay and
        SGD's momentum trace), so the result equals ``tx`` built with the
        schedule inside it. Frozen leaves (``optax.set_to_zero``) stay exactly zero.
        """
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        learning_rate = self.learning_rate_fn(self.step / self.steps_per_epoch)
        updates = jax.tree.map(lambda update: jnp.asarray(learning_rate, update.dtype) * update, updates)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state, **kwargs)


def init_variables(model: nn.Module, example_inputs: Mapping[str, Any], rng: jax.Array) -> dict[str, Any]:
    """Initialises the model's variables (params, batch_stats) on the shapes of a batch's ``inputs``."""
    params_rng, dropout_rng = jax.random.split(rng)
    init = jax.jit(lambda inputs: model.init({"params": params_rng, "dropout": dropout_rng}, **inputs, train=False))
    return init(dict(example_inputs))


def create_train_state(
    model: nn.Module,
    variables: Mapping[str, Any],
    tx: optax.GradientTransformation,
    rng: jax.Array,
    *,
    steps_per_epoch: int,
    learning_rate_fn: Callable[[jax.Array], jax.Array],
) -> TrainState:
    """Wraps initial variables, an optimiser, a dropout key and the learning-rate schedule in a TrainState.

    ``tx`` runs at learning rate 1 (``optim.make_optimizer``); the learning rate
    of a step is ``learning_rate_fn(step / steps_per_epoch)``
    (``optim.learning_rate_schedule``). Folds that share ``tx`` and an equal
    ``learning_rate_fn`` share one tree structure whatever their epoch length.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch}: an epoch needs at least one step")
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        rng=rng,
        steps_per_epoch=jnp.asarray(steps_per_epoch, jnp.int32),
        learning_rate_fn=learning_rate_fn,
    )
