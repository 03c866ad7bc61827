"""Epoch time with a frozen backbone prefix: cached prefix features vs running the prefix every step.

Seed 001 freezes the VGGFace2 layers before l_s. Both ways train the same
suffix on the same samples: uncached runs the frozen prefix on every window's
frames in every step; cached runs it once per frame (and augmented version)
before training (``merjax.train.prefix_cache``) and each step runs only the
suffix. This script takes an experiment's config (default: ``smic_bilstm``'s
default preset on synthetic SMIC-like data), builds fold 1's training samples
and times one epoch of train steps each way, after a warm-up epoch that pays the
compilation. It prints the epoch times, their ratio and the one-off cache
build time.

    python -m benchmarks.prefix_cache [--experiment smic_bilstm --freeze_until layer2 layer3 pooled]
    python -m benchmarks.prefix_cache --freeze_until layer3 \
        --set model.backbone.width=64 data.image_size=64 sampler.balance_per_class=16
"""

from __future__ import annotations

import argparse
import importlib
import time

import jax
import numpy as np

from experiments import cv
from merjax.train import sharding


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smic_bilstm", help="a config module in experiments/configs")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--freeze_until", nargs="+", default=["layer2", "layer3", "pooled"],
                        help="last frozen backbone endpoint(s), one comparison each")
    parser.add_argument("--variants", type=int, default=4, help="cached versions per clip")
    parser.add_argument("--dtype", default="float16", help="cache storage dtype")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. model.backbone.width=64 data.image_size=64")
    return parser.parse_args()


def apply_overrides(config, overrides: list[str]) -> None:
    """Sets ``a.b=value`` entries, parsed as the type the config already holds there."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise SystemExit(f"--set {override!r}: expected KEY=VALUE")
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        current = node[leaf]
        node[leaf] = value.lower() in ("1", "true") if isinstance(current, bool) else type(current)(value)


def epoch_seconds(config, setup, fold) -> tuple[float, float, int]:
    """Seconds of one epoch of train steps after a warm-up epoch, its mean loss and its sample count."""
    training = cv.prepare_training(setup, fold.train, 0)
    state = training.state

    def run_epoch(epoch: int):
        nonlocal state
        losses = []
        for batch in training.batches(epoch):
            state, metrics = setup.steps.train_step(state, sharding.shard_batch(batch, setup.mesh))
            losses.append(metrics["loss"])
        return float(np.mean(jax.device_get(losses)))

    run_epoch(0)
    started = time.perf_counter()
    loss = run_epoch(1)
    return time.perf_counter() - started, loss, training.steps_per_epoch * config.train.batch_size


def compare(config, clip_set, fold, freeze_until: str) -> float:
    """Prints both epoch times for one frozen endpoint; returns uncached / cached."""
    config.train.freeze_until = freeze_until
    results = {}
    for cached in (False, True):
        config.train.cache_prefix = cached
        started = time.perf_counter()
        setup = cv.setup_stage(config, clip_set)
        setup_seconds = time.perf_counter() - started
        seconds, loss, samples = epoch_seconds(config, setup, fold)
        results[cached] = seconds
        detail = f", cache {setup.frozen_prefix}" if cached else ""
        print(f"  {'cached' if cached else 'uncached'}: epoch {seconds:.2f} s ({samples} samples, "
              f"mean loss {loss:.4f}); set-up {setup_seconds:.1f} s{detail}")
    return results[False] / results[True]


def main() -> None:
    args = parse_args()
    config = importlib.import_module(f"experiments.configs.{args.experiment}").get_config(args.preset)
    apply_overrides(config, args.set)
    config.train.cache_variants = args.variants
    config.train.cache_dtype = args.dtype
    clip_set = cv.load_clip_set(config)
    fold = cv.make_folds(config, clip_set)[0]
    for freeze_until in args.freeze_until:
        ratio = compare(config, clip_set, fold, freeze_until)
        print(f"{args.experiment}:{args.preset}, frozen until {freeze_until}: "
              f"uncached / cached epoch time = {ratio:.2f}\n")


if __name__ == "__main__":
    main()
