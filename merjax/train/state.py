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


def create_train_state(
    model: nn.Module,
    example_batch: Mapping[str, Any],
    tx: optax.GradientTransformation,
    rng: jax.Array,
) -> TrainState:
    """Initialises the model on an example batch and wraps it in a TrainState."""
    init_rng, dropout_rng, state_rng = jax.random.split(rng, 3)

    @jax.jit
    def init(inputs):
        return model.init({"params": init_rng, "dropout": dropout_rng}, **inputs, train=False)

    variables = init(model_inputs(example_batch))
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        rng=state_rng,
    )
