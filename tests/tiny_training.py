"""A tiny model and batch source for tests of the train loops: fast on two cores, independent of the data pipeline.

``TinyNet`` has BatchNorm and dropout, so batch statistics, the dropout key and
the step counter all take part in training; batches follow the batch contract
(``inputs`` / ``targets`` / ``weights`` / ``masks``) and depend only on
(seed, epoch), like the pipeline's.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from merjax.train import losses, optim, steps
from merjax.train.state import TrainState, create_train_state, init_variables

NUM_FEATURES = 6
NUM_CLASSES = 3
BATCH_SIZE = 8


class TinyNet(nn.Module):
    """Dense - BatchNorm - ReLU - dropout - Dense on a feature vector.

    The first Dense has no bias: BatchNorm would cancel it, leaving a gradient
    that is zero up to rounding, which Adam amplifies to full-size steps (two
    mathematically equal programs would then drift apart).
    """

    @nn.compact
    def __call__(self, features, *, train: bool):
        x = nn.Dense(8, use_bias=False)(features)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.8)(x)
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
        return nn.Dense(NUM_CLASSES)(x)


def batch(rng: np.random.Generator, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """A batch whose class is the largest of the first three features (learnable), with noise."""
    features = rng.normal(size=(batch_size, NUM_FEATURES)).astype(np.float32)
    labels = np.argmax(features[:, :NUM_CLASSES] + 0.5 * rng.normal(size=(batch_size, NUM_CLASSES)), -1)
    return {"inputs": {"features": features},
            "targets": {"label": labels.astype(np.int32)},
            "weights": {"label": rng.uniform(0.5, 2.0, batch_size).astype(np.float32)},
            "masks": {"label": np.ones(batch_size, bool)}}


def fold_batches(seed: int, steps_per_epoch: int) -> Callable[[int], Iterator[dict[str, Any]]]:
    """``epoch -> steps_per_epoch batches`` drawn from (seed, epoch)."""
    def batches(epoch: int):
        rng = np.random.default_rng([seed, epoch])
        return (batch(rng) for _ in range(steps_per_epoch))
    return batches


MODEL = TinyNet()
TRAIN_CONFIG = ml_collections.ConfigDict(dict(
    optimizer="adamw", learning_rate=0.05, weight_decay=0.01, momentum=0.9, grad_clip=1.0, schedule="cosine",
    warmup_epochs=1.0, epochs=3, step_epochs=(), step_factor=0.1))
# One optimiser object for all folds, as a run builds it (folds stack only with one tx).
TX = optim.make_optimizer(TRAIN_CONFIG)
TRAIN_STEP = functools.partial(steps.train_step, objective=losses.make_loss({"name": "cross_entropy"}))


def initial_state(steps_per_epoch: int, seed: int = 0) -> TrainState:
    variables = init_variables(MODEL, batch(np.random.default_rng(0))["inputs"], jax.random.key(seed))
    return create_train_state(MODEL, variables, TX, jax.random.key(seed + 1), steps_per_epoch=steps_per_epoch,
                              learning_rate_fn=optim.learning_rate_schedule(TRAIN_CONFIG))


def run_on_emulated_devices(script: str, devices: int = 8) -> str:
    """Runs ``script`` in a fresh Python with ``devices`` emulated CPU devices; returns its stdout (fails the
    test with the script's stderr when it exits non-zero)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=repo)
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=repo, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
