"""Folds trained together (``vectorized.fit_folds``) vs one after another (``loop.fit``) on a LOSO-sized run.

A leave-one-subject-out protocol with a small model: ``--folds`` folds whose
training sides differ in size (``--min-steps`` to ``--max-steps`` steps per
epoch, as LOSO folds do), an LSTM head (``--hidden``) over sequences of
``--frames`` cached feature vectors of width ``--features``, batch
``--batch``, AdamW with cosine decay after a warm-up epoch. Both ways train the
same folds from the same states on the same batches; each is run once for one
epoch first (compilation), then timed over ``--epochs`` epochs. Prints both
times, the ratio vectorised / sequential and the largest parameter difference
between the two results.

    python -m benchmarks.vectorized_folds [--folds 16 --epochs 3 --min-steps 4 --max-steps 8]
"""

from __future__ import annotations

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from merjax.train import losses, optim, sharding, steps, vectorized
from merjax.train.loop import fit
from merjax.train.state import create_train_state, init_variables

NUM_CLASSES = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--min-steps", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=32)
    return parser.parse_args()


class LSTMHead(nn.Module):
    """LSTM over per-frame features, the last state classified (a temporal head on a cached prefix)."""

    hidden: int

    @nn.compact
    def __call__(self, features, *, train: bool):
        del train
        sequence = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(features)
        return nn.Dense(NUM_CLASSES)(sequence[:, -1])


def fold_batches(args: argparse.Namespace, seed: int, steps_per_epoch: int):
    def batches(epoch: int):
        rng = np.random.default_rng([seed, epoch])
        for _ in range(steps_per_epoch):
            yield {"inputs": {"features": rng.normal(size=(args.batch, args.frames, args.features)).astype(np.float32)},
                   "targets": {"label": rng.integers(0, NUM_CLASSES, args.batch).astype(np.int32)},
                   "weights": {"label": np.ones(args.batch, np.float32)},
                   "masks": {"label": np.ones(args.batch, bool)}}
    return batches


def main() -> None:
    args = parse_args()
    mesh = sharding.data_mesh()
    config = ml_collections.ConfigDict(dict(optimizer="adamw", learning_rate=1e-3, weight_decay=1e-4,
                                            schedule="cosine", warmup_epochs=1.0, epochs=args.epochs + 1))
    model = LSTMHead(args.hidden)
    tx = optim.make_optimizer(config)
    example = {"features": np.zeros((args.batch, args.frames, args.features), np.float32)}
    variables = init_variables(model, example, jax.random.key(0))
    counts = np.random.default_rng(0).integers(args.min_steps, args.max_steps + 1, args.folds).tolist()
    states = [create_train_state(model, variables, tx, jax.random.key(fold), steps_per_epoch=n,
                                 learning_rate_fn=optim.learning_rate_schedule(config))
              for fold, n in enumerate(counts)]
    batches = [fold_batches(args, fold, n) for fold, n in enumerate(counts)]
    pure_step = functools.partial(steps.train_step, objective=losses.make_loss({"name": "cross_entropy"}))
    jitted_step = sharding.jit_train_step(pure_step, mesh)

    def sequential(epochs: int):
        return [fit(sharding.replicate(state, mesh), train_step=jitted_step, train_batches=fold, epochs=epochs,
                    mesh=mesh).state for state, fold in zip(states, batches)]

    def together(epochs: int):
        return [result.state for result in vectorized.fit_folds(
            states, train_step=pure_step, train_batches=batches, steps_per_epoch=counts, epochs=epochs, mesh=mesh)]

    seconds = {}
    results = {}
    for name, run in (("sequential", sequential), ("vectorised", together)):
        jax.block_until_ready(run(1))   # compile
        started = time.perf_counter()
        results[name] = jax.block_until_ready(run(args.epochs))
        seconds[name] = time.perf_counter() - started
    difference = max(float(jnp.abs(a - b).max()) for one, other in zip(results["sequential"], results["vectorised"])
                     for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(other.params)))
    print(f"{args.folds} folds of {min(counts)}-{max(counts)} steps/epoch ({sum(counts)} steps/epoch in all), "
          f"LSTM({args.hidden}) over {args.frames} x {args.features} features, batch {args.batch}, "
          f"{args.epochs} epochs, {jax.devices()[0].platform} x {mesh.size}")
    print(f"sequential {seconds['sequential']:.2f} s, vectorised {seconds['vectorised']:.2f} s "
          f"(vectorised runs {max(counts)} steps/epoch on {args.folds} folds at once)")
    print(f"ratio vectorised / sequential: {seconds['vectorised'] / seconds['sequential']:.2f}; "
          f"largest parameter difference {difference:.1e}")


if __name__ == "__main__":
    main()
