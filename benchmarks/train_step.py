"""Times one clip train step (ResNet-50 VGGFace2 variant + BiLSTM + fc1-fc3) in merjax and PyTorch.

Both sides get the same weights (random, from ``tests.torch_reference``), the same
batch and the same optimiser, and use the same number of CPU threads. merjax runs
``merjax.train.steps.train_step`` jitted (compile time reported separately);
PyTorch runs eager forward + backward + step. After one warm-up step each, the
timed steps alternate between the two, so load from other processes hits both
alike (PyTorch's OpenMP threads slow down far more than XLA's when the cores are
shared; the minimum is the least disturbed figure). Prints median and minimum
times and the ratios torch / merjax (> 1: merjax is faster).

    python -m benchmarks.train_step [--clips 2 --frames 8 --size 112 --steps 5 --optimizer sgd]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch

from merjax.models import create_model
from merjax.train import losses, optim
from merjax.train.state import create_train_state
from merjax.train.steps import train_step
from tests import torch_reference as ref

NUM_CLASSES = 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=1e-4)
    return parser.parse_args()


def model_config(hidden: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "name": "clip_classifier",
        "backbone": {"name": "resnet", "stage_sizes": (3, 4, 6, 3), "width": 64},
        "temporal": {"kind": "bilstm", "hidden": hidden, "layers": 1, "dropout": 0.0},
        "head": {"hidden": (512, 128), "dropout": 0.5},
        "dtype": "float32",
    })


def seconds(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.clips, args.frames, args.size, args.size, 3), np.uint8)
    mask = np.ones((args.clips, args.frames), bool)
    labels = rng.integers(0, NUM_CLASSES, args.clips).astype(np.int32)

    torch_model = ref.randomize_(ref.ClipClassifier(NUM_CLASSES, hidden=args.hidden)).train()
    variables = ref.merjax_clip_variables(torch_model)

    # merjax
    model = create_model(model_config(args.hidden), NUM_CLASSES)
    # merjax optimisers run at learning rate 1; the state scales each update by the (constant) schedule.
    tx = optax.sgd(1.0, momentum=0.9) if args.optimizer == "sgd" else optax.adam(1.0)
    state = create_train_state(model, jax.tree.map(jnp.asarray, variables), tx, jax.random.key(0),
                               steps_per_epoch=args.steps + 1, learning_rate_fn=optim.EpochSchedule(args.lr))
    batch = {"inputs": {"frames": jnp.asarray(frames), "mask": jnp.asarray(mask)},
             "targets": {"label": jnp.asarray(labels)},
             "weights": {"label": jnp.ones(args.clips, jnp.float32)},
             "masks": {"label": jnp.ones(args.clips, bool)}}
    objective = losses.make_loss({"name": "cross_entropy"})
    step = jax.jit(functools.partial(train_step, objective=objective), donate_argnums=0)

    def merjax_step() -> None:
        nonlocal state
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)

    # PyTorch
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(torch_model.parameters(), lr=args.lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(torch_model.parameters(), lr=args.lr)
    torch_batch = (torch.from_numpy(frames), torch.from_numpy(mask), torch.from_numpy(labels).long())

    def torch_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(torch_model(*torch_batch[:2]), torch_batch[2])
        loss.backward()
        optimizer.step()

    compile_s = seconds(merjax_step)
    torch_step()  # warm-up
    merjax_times, torch_times = [], []
    for _ in range(args.steps):
        merjax_times.append(seconds(merjax_step))
        torch_times.append(seconds(torch_step))

    merjax_s, torch_s = statistics.median(merjax_times), statistics.median(torch_times)
    print(f"train step: ResNet-50 (VGGFace2 variant) + BiLSTM({args.hidden}) + fc 512-128-{NUM_CLASSES}, "
          f"{args.clips} clips x {args.frames} frames at {args.size}x{args.size}, {args.optimizer}, "
          f"{threads} CPU threads, {jax.devices()[0].platform}")
    print(f"merjax  compile+first step {compile_s:.2f} s; median {merjax_s:.3f} s "
          f"(min {min(merjax_times):.3f}, max {max(merjax_times):.3f}) over {args.steps} steps")
    print(f"pytorch median {torch_s:.3f} s (min {min(torch_times):.3f}, max {max(torch_times):.3f}) "
          f"over {args.steps} steps")
    print(f"ratio torch/merjax: median {torch_s / merjax_s:.2f}, "
          f"min {min(torch_times) / min(merjax_times):.2f}")


if __name__ == "__main__":
    main()
