"""Seeds derived from seeds: one place for every per-fold, per-epoch and per-stage seed."""

from __future__ import annotations

import numpy as np


def derived_seed(*entropy: int) -> int:
    """A 32-bit seed from ints, e.g. ``derived_seed(seed, fold_index)`` for a fold's training or
    ``derived_seed(seed, epoch)`` for an epoch's shuffle (numpy's SeedSequence: well-mixed, stable)."""
    return int(np.random.SeedSequence([int(value) for value in entropy]).generate_state(1)[0])
