"""3x3 convolution on maps smaller than the kernel: XLA's convolution vs merjax's ``Conv3x3`` (im2col).

At 48-64 pixel input the last ResNet stage works on 2x2 maps, where XLA:CPU's
convolution takes a slow path. ``merjax.models.resnet.Conv3x3`` computes the same
convolution there as one matrix product over the nine shifted copies of the
padded map. This script times both (jitted, forward and forward + gradient,
median after warm-up) on one layer4-sized input and prints the ratios and the
largest differences.

    python -m benchmarks.small_map_conv [--batch 104 --size 2 --channels 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from merjax.models.resnet import Conv3x3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=104, help="frames (8 windows x 13 frames)")
    parser.add_argument("--size", type=int, default=2, help="map height and width")
    parser.add_argument("--channels", type=int, default=512, help="ResNet-50 layer4 width")
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def median_seconds(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, args.channels))
    ours = Conv3x3(args.channels)
    xla = nn.Conv(args.channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)
    variables = ours.init(jax.random.key(1), x)
    for name, module in (("Conv3x3 (im2col)", ours), ("nn.Conv (XLA)", xla)):
        forward = jax.jit(lambda v, x, m=module: m.apply(v, x))
        gradient = jax.jit(jax.grad(lambda v, x, m=module: jnp.sum(m.apply(v, x) ** 2), argnums=(0, 1)))
        timings = (median_seconds(forward, variables, x, repeats=args.repeats),
                   median_seconds(gradient, variables, x, repeats=args.repeats))
        if module is ours:
            reference = timings
            outputs = (forward(variables, x), gradient(variables, x))
        else:
            difference = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
                jax.tree.leaves(outputs), jax.tree.leaves((forward(variables, x), gradient(variables, x)))))
        print(f"{name}: forward {timings[0] * 1e3:.1f} ms, forward + gradient {timings[1] * 1e3:.1f} ms")
    print(f"[{args.batch},{args.size},{args.size},{args.channels}]: nn.Conv / Conv3x3 = "
          f"{timings[0] / reference[0]:.1f}x forward, {timings[1] / reference[1]:.1f}x with gradient; "
          f"largest difference {difference:.2e}")


if __name__ == "__main__":
    main()
