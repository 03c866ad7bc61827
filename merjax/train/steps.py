"""Pure train and eval steps: ``train_step(state, batch) -> (state, metrics)``.

A batch is a dict of arrays. ``label`` [B] holds the targets; everything else
except the optional weights (``sample_weight`` [B], 0 for padding slots, and
``window_mask`` [B,W] for clip models that classify W windows per clip) is
passed to the model by keyword. Class weighting is a host-side choice: the
input pipeline puts ``class_weight[label]`` into ``sample_weight``, so the
step stays ``(state, batch)`` and compiles once for every fold. A model may return logits [B,C] or, with
``windows``, [B,W,C]; the clip label then applies to every window.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from merjax.train.losses import cross_entropy
from merjax.train.state import TrainState, model_inputs

Batch = Mapping[str, jax.Array]


def example_weights(batch: Batch, logits: jax.Array) -> jax.Array:
    """Per-prediction weights [B] or [B,W] from the batch's optional masks."""
    weights = jnp.ones(logits.shape[:-1], jnp.float32)
    if "window_mask" in batch and logits.ndim == 3:
        weights = weights * batch["window_mask"].astype(jnp.float32)
    if "sample_weight" in batch:
        sample_weight = batch["sample_weight"].astype(jnp.float32)
        weights = weights * sample_weight.reshape(sample_weight.shape + (1,) * (logits.ndim - 2))
    return weights


def _labels_like(batch: Batch, logits: jax.Array) -> jax.Array:
    labels = batch["label"].astype(jnp.int32)
    return jnp.broadcast_to(labels.reshape(labels.shape + (1,) * (logits.ndim - 2)), logits.shape[:-1])


def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on one batch; BatchNorm statistics are updated in train mode."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            **model_inputs(batch),
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats"],
        )
        weights = example_weights(batch, logits)
        loss = cross_entropy(logits, _labels_like(batch, logits), weights=weights)
        return loss, (logits, weights, updates)

    (loss, (logits, weights, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    correct = (jnp.argmax(logits, -1) == _labels_like(batch, logits)).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "accuracy": jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1e-12),
        "grad_norm": optax.global_norm(grads),
    }
    return new_state, metrics


def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Class log-probabilities per sample with BatchNorm on running statistics.

    For window logits [B,W,C] the clip's log-probabilities are the mean over its
    valid windows (``window_mask``) of the windows' log-softmax.
    """
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, **model_inputs(batch), train=False)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    if log_probs.ndim == 3:
        mask = batch.get("window_mask", jnp.ones(log_probs.shape[:2], bool)).astype(jnp.float32)
        log_probs = jnp.einsum("bwc,bw->bc", log_probs, mask) / jnp.maximum(mask.sum(-1, keepdims=True), 1.0)
    return {"log_probs": log_probs}
