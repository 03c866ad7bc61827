"""Pure train and eval steps on batches of the batch contract (``merjax.data.batches``).

``train_step(state, batch, *, objective)``: the model sees ``batch['inputs']``
and nothing else; ``objective(outputs, batch) -> (loss, per-target losses)``
(``merjax.train.losses.make_loss``) reads the targets, weights and masks. The
engine binds the objective before jit (``functools.partial``), so the jitted
step is ``(state, batch) -> (state, metrics)`` and compiles once for every fold:
class weights and focal α are per-sample weights the input pipeline puts in the
batch, never constants of the step.

A model returns logits [B,C] (its one target, ``label``) or a dict of logits
per target. ``eval_step`` returns the log-probabilities of ``label`` per sample;
for window logits [B,W,C] (a clip scored by W windows) the mean over its valid
windows (``masks['label']``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from merjax.train.state import TrainState

Batch = Mapping[str, Any]
Objective = Callable[[Any, Batch], tuple[jax.Array, dict[str, jax.Array]]]
MAIN_TARGET = "label"


def main_logits(outputs: Any) -> jax.Array:
    """The logits of the main target: the model's output, or its ``label`` entry."""
    return outputs[MAIN_TARGET] if isinstance(outputs, Mapping) else outputs


def train_step(state: TrainState, batch: Batch, *, objective: Objective) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on one batch; BatchNorm statistics are updated in train mode."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        outputs, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            **batch["inputs"],
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats"],
        )
        loss, per_target = objective(outputs, batch)
        return loss, (outputs, per_target, updates)

    (loss, (outputs, per_target, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    if len(per_target) > 1:
        metrics.update({f"loss_{name}": value for name, value in per_target.items()})
    if MAIN_TARGET in batch["targets"]:
        logits = main_logits(outputs)
        labels = batch["targets"][MAIN_TARGET]
        labels = jnp.broadcast_to(labels.reshape(labels.shape + (1,) * (logits.ndim - 1 - labels.ndim)),
                                  logits.shape[:-1])
        valid = batch["masks"][MAIN_TARGET].astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        metrics["accuracy"] = jnp.sum(correct * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    return new_state, metrics


def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Log-probabilities of the main target per sample, with BatchNorm on running statistics."""
    outputs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, **batch["inputs"],
                             train=False)
    log_probs = jax.nn.log_softmax(main_logits(outputs).astype(jnp.float32))
    if log_probs.ndim == 3:
        mask = batch["masks"][MAIN_TARGET].astype(jnp.float32)
        log_probs = jnp.einsum("bwc,bw->bc", log_probs, mask) / jnp.maximum(mask.sum(-1, keepdims=True), 1.0)
    return {"log_probs": log_probs}
