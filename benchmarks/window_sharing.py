"""Shared per-frame encoding of sliding windows vs re-encoding every window.

Seed 001 cuts each clip of T frames into overlapping windows of N frames (stride
s). ``ClipClassifier(frames, mask, windows)`` encodes each of the T frames once
and gathers the windows from the encoded sequence; the naive way encodes the
W*N frames of the windows. With frozen BatchNorm (``train=False``: running
statistics) both give the same loss and gradients; this script times one loss +
gradient evaluation both ways (jitted, median after warm-up), prints the ratio
and the largest differences of loss and gradients.

    python -m benchmarks.window_sharing [--frames 24 --window 13 --stride 2 --size 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

from merjax.models import create_model
from merjax.train.losses import cross_entropy
from tests import torch_reference as ref

NUM_CLASSES = 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="T, frames in the clip")
    parser.add_argument("--window", type=int, default=13, help="N, frames per window")
    parser.add_argument("--stride", type=int, default=2, help="s, window stride")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64, help="ResNet-50 base width")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def timed(fn, *args, repeats: int) -> tuple[float, object]:
    out = jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def max_abs_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main() -> None:
    args = parse_args()
    starts = np.arange(0, args.frames - args.window + 1, args.stride)
    windows = (starts[:, None] + np.arange(args.window)[None, :]).astype(np.int32)  # [W,N]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, args.frames, args.size, args.size, 3), np.uint8)
    mask = np.ones((1, args.frames), bool)
    label = jnp.asarray(rng.integers(0, NUM_CLASSES), jnp.int32)

    config = ml_collections.ConfigDict({
        "name": "clip_classifier",
        "backbone": {"name": "resnet", "stage_sizes": (3, 4, 6, 3), "width": args.width},
        "temporal": {"kind": "bilstm", "hidden": args.hidden, "layers": 1, "dropout": 0.0},
        "head": {"hidden": (512, 128), "dropout": 0.5},
        "dtype": "float32",
    })
    model = create_model(config, NUM_CLASSES)
    torch_model = ref.randomize_(ref.ClipClassifier(NUM_CLASSES, width=args.width, hidden=args.hidden))
    with torch.no_grad():  # keep [0, 255] inputs from saturating the LSTM, so gradients are not ~0
        torch_model.backbone.conv1.weight /= 100.0
    variables = jax.tree.map(jnp.asarray, ref.merjax_clip_variables(torch_model))
    batch_stats = variables["batch_stats"]

    def shared_loss(params):
        logits = model.apply({"params": params, "batch_stats": batch_stats},
                             frames, mask, windows[None], train=False)
        return cross_entropy(logits[0], label)

    def reencoded_loss(params):
        logits = model.apply({"params": params, "batch_stats": batch_stats},
                             frames[0][windows], mask[0][windows], train=False)
        return cross_entropy(logits, label)

    shared_s, (shared_value, shared_grads) = timed(
        jax.jit(jax.value_and_grad(shared_loss)), variables["params"], repeats=args.repeats)
    reencoded_s, (reencoded_value, reencoded_grads) = timed(
        jax.jit(jax.value_and_grad(reencoded_loss)), variables["params"], repeats=args.repeats)

    grad_scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(reencoded_grads))
    loss_diff = abs(float(shared_value - reencoded_value))
    grad_diff = max_abs_diff(shared_grads, reencoded_grads)
    print(f"window sharing: ResNet-50 (width {args.width}) + BiLSTM({args.hidden}), clip of "
          f"T={args.frames} frames at {args.size}x{args.size}, windows N={args.window} stride "
          f"{args.stride}: W={len(windows)} windows, {args.frames} vs {windows.size} frame encodings; "
          f"loss + gradients, frozen BatchNorm, {jax.devices()[0].platform}")
    print(f"shared encoding   median {shared_s:.3f} s over {args.repeats}")
    print(f"re-encode windows median {reencoded_s:.3f} s over {args.repeats}")
    print(f"ratio re-encode/shared {reencoded_s / shared_s:.2f} "
          f"(frame-encoding ratio {windows.size / args.frames:.2f})")
    print(f"loss {float(shared_value):.6f} vs {float(reencoded_value):.6f}, "
          f"max |diff| {loss_diff:.2e}")
    print(f"gradients max |diff| {grad_diff:.2e} (largest gradient {grad_scale:.2e})")
    assert loss_diff <= 1e-5 * max(1.0, abs(float(reencoded_value))), "losses differ"
    assert grad_diff <= 1e-4 * grad_scale, "gradients differ"


if __name__ == "__main__":
    main()
