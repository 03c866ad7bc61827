"""Optimisers and learning-rate schedules from a config section.

Config keys (``config.train``): ``optimizer`` ('adam' | 'adamw' | 'sgd'),
``learning_rate``, ``momentum`` (sgd), ``weight_decay``, ``schedule``
('constant' | 'cosine' | 'step'), ``warmup_epochs``, ``epochs``,
``step_epochs`` and ``step_factor`` (step decay), ``grad_clip`` (global norm,
0 = off).

The schedule is a function of the fractional epoch (``EpochSchedule``), not of
the step, and ``make_optimizer`` builds the optimiser at learning rate 1: the
train state scales each update by the schedule's value at
``step / steps_per_epoch`` (``merjax.train.state.TrainState``). One optimiser
and one schedule thus serve folds of any epoch length.

``frozen_mask`` / ``make_optimizer(..., frozen=mask)`` keep a frozen backbone
prefix fixed: its parameters get no updates (``optax.set_to_zero``, so weight
decay cannot move them either) and no optimiser state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


@dataclasses.dataclass(frozen=True)
class EpochSchedule:
    """The learning rate at a fractional epoch: optional linear warm-up, then constant, cosine or step decay.

    A frozen dataclass, so two schedules of equal settings are equal (and hash
    alike): train states of different folds then have one tree structure.
    Cosine decays to 0 at ``epochs``; step decay multiplies by ``step_factor``
    from each of ``step_epochs`` on. Equals the step-based optax schedule of
    earlier versions wherever ``warmup_epochs`` and ``step_epochs`` fall on whole
    steps (that schedule rounded them down to a step).
    """

    learning_rate: float
    schedule: str = "constant"
    epochs: float = 1.0
    warmup_epochs: float = 0.0
    step_epochs: tuple[float, ...] = ()
    step_factor: float = 0.1

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.schedule == "cosine" and not self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} leaves no epochs of the {self.epochs} "
                             f"to decay over; use fewer warm-up epochs")

    def __call__(self, epoch: jax.Array) -> jax.Array:
        epoch = jnp.asarray(epoch, jnp.float32)
        base = jnp.float32(self.learning_rate)
        if self.schedule == "constant":
            main = base
        elif self.schedule == "cosine":
            fraction = jnp.clip((epoch - self.warmup_epochs) / (self.epochs - self.warmup_epochs), 0.0, 1.0)
            main = base * (0.5 * (1 + jnp.cos(jnp.pi * fraction)))
        else:
            main = base
            for boundary in sorted(self.step_epochs):
                main = jnp.where(epoch >= boundary, main * self.step_factor, main)
        if not self.warmup_epochs:
            return main
        return jnp.where(epoch < self.warmup_epochs, base * epoch / self.warmup_epochs, main)


def learning_rate_schedule(config: Any) -> EpochSchedule:
    """The schedule of ``config.train`` as a function of the fractional epoch."""
    return EpochSchedule(
        learning_rate=float(config.learning_rate),
        schedule=config.schedule,
        epochs=float(config.epochs),
        warmup_epochs=float(config.get("warmup_epochs", 0.0)),
        step_epochs=tuple(float(epoch) for epoch in config.get("step_epochs", ())),
        step_factor=float(config.get("step_factor", 0.1)),
    )


def frozen_mask(params: Any, frozen_until: str, backbone: Any) -> Any:
    """True for every backbone parameter of a stage up to and including ``frozen_until``.

    ``params`` is a model's params tree (``{'backbone': {...}, 'head': ...}``) or a
    bare backbone's; ``backbone`` is the model's backbone
    (``merjax.models.backbones.Backbone``), which says through ``endpoint_of_param``
    which endpoint's stage owns each of its parameters.
    """
    endpoint_names = list(backbone.endpoint_names)
    if frozen_until not in endpoint_names:
        raise ValueError(f"unknown endpoint {frozen_until!r} to freeze until; "
                         f"expected one of {tuple(endpoint_names)}")
    last_frozen = endpoint_names.index(frozen_until)
    backbone_keys = ("backbone",) if "backbone" in params else ()

    def frozen(path: tuple[str, ...]) -> bool:
        if path[:len(backbone_keys)] != backbone_keys:
            return False
        return endpoint_names.index(backbone.endpoint_of_param(path[len(backbone_keys):])) <= last_frozen

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: frozen(path) for path in flat})


def make_optimizer(config: Any, *, frozen: Any = None) -> optax.GradientTransformation:
    """The optimiser of ``config.train`` at learning rate 1, with optional gradient clipping.

    The learning rate is applied by the train state (``learning_rate_schedule``):
    for adam, adamw and sgd it is the last linear factor of optax's update
    (AdamW's decoupled decay is scaled by it; SGD's weight decay is added to the
    gradient before momentum), so scaling the unit-rate update is exactly the
    optimiser with the schedule inside. One optimiser serves every fold of a run.

    ``frozen``: an optional bool tree like the params (``frozen_mask``); True leaves
    are never updated. Clipping sees only the trainable gradients.
    """
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")
    if config.optimizer == "adam":
        optimizer = optax.adam(1.0)
    elif config.optimizer == "adamw":
        optimizer = optax.adamw(1.0, weight_decay=config.weight_decay)
    else:
        optimizer = optax.sgd(1.0, momentum=config.get("momentum", 0.9) or None)
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
