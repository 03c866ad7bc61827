"""Train state: parameters, optimiser state, BatchNorm statistics and a dropout key."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm running statistics and the base dropout key.

    The dropout key of a step is ``fold_in(rng, step)``, so a resumed run draws
    the same dropout masks as an uninterrupted one.
    """

    batch_stats: Any
    rng: jax.Array


# Batch entries that are targets or weights, not model inputs.
NON_INPUT_KEYS = frozenset({"label", "sample_weight", "window_mask"})


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch entries the model consumes: everything but targets and weights."""
    return {k: v for k, v in batch.items() if k not in NON_INPUT_KEYS}


def init_variables(model: nn.Module, example_batch: Mapping[str, Any], rng: jax.Array) -> dict[str, Any]:
    """Initialises the model's variables (params, batch_stats) on an example batch's shapes."""
    params_rng, dropout_rng = jax.random.split(rng)
    init = jax.jit(lambda inputs: model.init({"params": params_rng, "dropout": dropout_rng}, **inputs, train=False))
    return init(model_inputs(example_batch))


def create_train_state(
    model: nn.Module,
    variables: Mapping[str, Any],
    tx: optax.GradientTransformation,
    rng: jax.Array,
) -> TrainState:
    """Wraps initial variables, an optimiser and a dropout key in a TrainState."""
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        rng=rng,
    )
