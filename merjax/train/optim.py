"""Optimisers and learning-rate schedules from a config section.

Config keys (``config.train``): ``optimizer`` ('adam' | 'adamw' | 'sgd'),
``learning_rate``, ``momentum`` (sgd), ``weight_decay``, ``schedule``
('constant' | 'cosine' | 'step'), ``warmup_epochs``, ``epochs``,
``step_epochs`` and ``step_factor`` (step decay), ``grad_clip`` (global norm,
0 = off).

``frozen_mask`` / ``make_optimizer(..., frozen=mask)`` keep a frozen backbone
prefix fixed: its parameters get no updates (``optax.set_to_zero``, so weight
decay cannot move them either) and no optimiser state.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import optax
from flax import traverse_util

from merjax.models.resnet import endpoint_of_module

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def learning_rate_schedule(config: Any, steps_per_epoch: int) -> optax.Schedule:
    """The schedule of ``config.train``: optional linear warm-up, then constant, cosine or step decay."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {SCHEDULES}")
    base = config.learning_rate
    warmup_steps = int(config.get("warmup_epochs", 0) * steps_per_epoch)
    total_steps = max(config.epochs * steps_per_epoch, 1)
    if config.schedule == "constant":
        main = optax.constant_schedule(base)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(base, decay_steps=max(total_steps - warmup_steps, 1))
    else:
        boundaries = {int(epoch * steps_per_epoch) - warmup_steps: config.step_factor
                      for epoch in config.step_epochs}
        main = optax.piecewise_constant_schedule(base, boundaries)
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, base, warmup_steps)
    return optax.join_schedules([warmup, main], boundaries=[warmup_steps])


def frozen_mask(params: Any, frozen_until: str, endpoint_names: Sequence[str]) -> Any:
    """True for every backbone parameter of a stage up to and including ``frozen_until``.

    ``params`` is a classifier's params tree (``{'backbone': {...}, 'head': ...}``)
    or a bare ResNet's; ``endpoint_names`` is the backbone's ``endpoint_names``.
    """
    if frozen_until not in endpoint_names:
        raise ValueError(f"unknown endpoint {frozen_until!r} to freeze until; "
                         f"expected one of {tuple(endpoint_names)}")
    last_frozen = list(endpoint_names).index(frozen_until)
    backbone_keys = ("backbone",) if "backbone" in params else ()

    def frozen(path: tuple[str, ...]) -> bool:
        if path[:len(backbone_keys)] != backbone_keys:
            return False
        module = path[len(backbone_keys)]
        return list(endpoint_names).index(endpoint_of_module(module)) <= last_frozen

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: frozen(path) for path in flat})


def make_optimizer(config: Any, steps_per_epoch: int, frozen: Any = None) -> optax.GradientTransformation:
    """The optimiser of ``config.train`` with its schedule and optional gradient clipping.

    ``frozen``: an optional bool tree like the params (``frozen_mask``); True leaves
    are never updated. Clipping sees only the trainable gradients.
    """
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")
    schedule = learning_rate_schedule(config, steps_per_epoch)
    if config.optimizer == "adam":
        optimizer = optax.adam(schedule)
    elif config.optimizer == "adamw":
        optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        optimizer = optax.sgd(schedule, momentum=config.get("momentum", 0.9) or None)
    transforms = []
    if config.get("grad_clip", 0.0):
        transforms.append(optax.clip_by_global_norm(config.grad_clip))
    if config.optimizer == "sgd" and config.get("weight_decay", 0.0):
        transforms.append(optax.add_decayed_weights(config.weight_decay))
    trainable = optax.chain(*transforms, optimizer)
    if frozen is None:
        return trainable
    labels = jax.tree.map(lambda is_frozen: "frozen" if is_frozen else "trainable", frozen)
    return optax.multi_transform({"trainable": trainable, "frozen": optax.set_to_zero()}, labels)
