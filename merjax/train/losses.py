"""Classification losses selectable by name, and the host-side class weights they use.

A run picks its loss with ``--config.loss.name`` from ``LOSSES``:

* ``cross_entropy``: softmax cross-entropy, averaged with PyTorch's
  ``CrossEntropyLoss(weight=class_weights, reduction='mean')`` convention
  (divided by the summed weights, not by the number of predictions).
* ``focal``: the softmax focal loss of Lin et al. 2017,
  FL = -alpha_t (1 - p_t)^gamma log p_t, averaged over the valid predictions.
  It down-weights the easy examples of large classes; seed 002 trains with it
  (alpha = inverse class frequency) on the MEGC 2019 composite, whose three
  classes are far from balanced.

``make_loss(loss_config)`` turns the config into ``objective(outputs, batch)``
for the batch contract of ``merjax.train.steps``: a model predicts one target
(logits, called ``"label"``) or several (a dict of logits), and the batch holds,
per target, the integer targets, per-prediction weights and validity masks.

Class weights (cross-entropy's class weights, focal's alpha_t) are computed on
the host with ``class_weights`` from the fold's TRAINING side only -- no test
subject may enter them -- and reach the loss per sample as ``batch["weights"]``
(``sample_weights``), so that one compiled step serves every fold.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from merjax.errors import UserError

_EPSILON = 1e-12

Objective = Callable[[Any, Mapping[str, Any]], tuple[jax.Array, dict[str, jax.Array]]]


def _like_predictions(values: jax.Array | None, shape: tuple[int, ...], dtype) -> jax.Array:
    """``values`` broadcast from the left to ``shape`` (e.g. a clip's [B] label to [B,W] windows); None = ones."""
    if values is None:
        return jnp.ones(shape, dtype)
    values = jnp.asarray(values).astype(dtype)
    return jnp.broadcast_to(values.reshape(values.shape + (1,) * (len(shape) - values.ndim)), shape)


def _target_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p_t of each prediction: [..., C] logits (in float32) and targets -> [...]."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    targets = _like_predictions(targets, log_probs.shape[:-1], jnp.int32)
    return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def cross_entropy(logits: jax.Array, targets: jax.Array, *, weights: jax.Array | None = None,
                  mask: jax.Array | None = None) -> jax.Array:
    """Weighted mean softmax cross-entropy: sum(m*w*ce) / sum(m*w).

    With ``weights = class_weights[targets]`` this is PyTorch's
    ``cross_entropy(logits, targets, weight=class_weights, reduction='mean')``.

    Args:
      logits: [..., C] unnormalised scores (computed in float32).
      targets: integer classes, broadcast from the left to ``logits.shape[:-1]``.
      weights: optional per-prediction weights, broadcast like ``targets``.
      mask: optional per-prediction validity (False = padding), broadcast like ``targets``.
    """
    target_log_probs = _target_log_probs(logits, targets)
    shape = target_log_probs.shape
    weight = _like_predictions(mask, shape, jnp.float32) * _like_predictions(weights, shape, jnp.float32)
    return jnp.sum(weight * -target_log_probs) / jnp.maximum(jnp.sum(weight), _EPSILON)


def focal(logits: jax.Array, targets: jax.Array, *, weights: jax.Array | None = None,
          mask: jax.Array | None = None, gamma: float = 2.0) -> jax.Array:
    """Softmax focal loss (Lin et al. 2017), mean over valid predictions: sum(m*w*(1-p_t)^gamma*ce) / sum(m).

    ``weights`` carry alpha_t (e.g. inverse class frequency of the target);
    unlike ``cross_entropy`` they do not enter the denominator, as in the paper.
    With ``gamma=0`` and no weights this equals ``cross_entropy``. The factor
    (1-p_t)^gamma is computed from log p_t as (-expm1(log p_t))^gamma, which
    keeps its precision for confident predictions; where p_t rounds to 1 the
    factor is 0^gamma with a zero gradient (no NaN for 0 < gamma < 1).

    Args: as ``cross_entropy``, plus the focusing parameter ``gamma`` >= 0.
    """
    target_log_probs = _target_log_probs(logits, targets)
    shape = target_log_probs.shape
    one_minus_p = -jnp.expm1(target_log_probs)
    positive = one_minus_p > 0
    modulation = jnp.where(positive, jnp.power(jnp.where(positive, one_minus_p, 1.0), gamma),
                           jnp.power(0.0, gamma))
    valid = _like_predictions(mask, shape, jnp.float32)
    alpha = _like_predictions(weights, shape, jnp.float32)
    return jnp.sum(valid * alpha * modulation * -target_log_probs) / jnp.maximum(jnp.sum(valid), _EPSILON)


LOSSES: dict[str, Callable[..., jax.Array]] = {"cross_entropy": cross_entropy, "focal": focal}


def _hyperparameter_names(loss_fn: Callable[..., jax.Array]) -> tuple[str, ...]:
    """A loss's hyperparameters: its keyword-only arguments other than ``weights`` and ``mask``."""
    return tuple(name for name, parameter in inspect.signature(loss_fn).parameters.items()
                 if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("weights", "mask"))


def make_loss(loss_config: Mapping[str, Any]) -> Objective:
    """``objective(outputs, batch) -> (total, {target: loss})`` for ``loss_config``.

    ``loss_config`` (a mapping or ConfigDict) has ``name`` (a key of ``LOSSES``),
    the loss's hyperparameters (``gamma`` for ``focal``; ignored by the others)
    and optionally ``target_weights`` {target: weight} (missing targets weigh 1).
    ``outputs`` are logits (the single target ``"label"``) or {target: logits};
    ``batch`` has ``targets``, ``weights`` and ``masks`` dicts by target (see
    ``merjax.train.steps``). total = sum over targets of weight * loss.
    """
    name = loss_config["name"]
    if name not in LOSSES:
        raise UserError(f"unknown --config.loss.name={name!r}: choose one of {sorted(LOSSES)}")
    loss_fn = LOSSES[name]
    hyperparameters = {key: loss_config[key] for key in _hyperparameter_names(loss_fn) if key in loss_config}
    if hyperparameters.get("gamma", 0.0) < 0:
        raise UserError(f"--config.loss.gamma={hyperparameters['gamma']} is negative: focal loss needs gamma >= 0")
    target_weights = dict(loss_config.get("target_weights") or {})

    def objective(outputs: Any, batch: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits_by_target = outputs if isinstance(outputs, Mapping) else {"label": outputs}
        targets = batch["targets"]
        for target in logits_by_target:
            if target not in targets:
                raise ValueError(f"the model predicts target {target!r} but the batch has no targets for it "
                                 f"(batch targets: {sorted(targets)})")
        for target in targets:
            if target not in logits_by_target:
                raise ValueError(f"the batch has targets {target!r} that the model does not predict "
                                 f"(model outputs: {sorted(logits_by_target)})")
        for target in target_weights:
            if target not in logits_by_target:
                raise UserError(f"--config.loss.target_weights names target {target!r}, which the model does "
                                f"not predict: use one of {sorted(logits_by_target)}")
        weights, masks = batch.get("weights", {}), batch.get("masks", {})
        per_target = {target: loss_fn(logits, targets[target], weights=weights.get(target),
                                      mask=masks.get(target), **hyperparameters)
                      for target, logits in logits_by_target.items()}
        total = sum(float(target_weights.get(target, 1.0)) * loss for target, loss in per_target.items())
        return total, per_target

    return objective


def class_weights(values: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency weights of training targets, normalised to mean 1 over classes.

    Args:
      values: the targets of the fold's TRAINING samples: [n] or [n, K] (K
        targets per sample, e.g. 6 regions; each column gets its own weights).
      num_classes: C.

    Returns:
      float32 [C] for [n] values, [K, C] for [n, K] values.

    A class with no training example raises: a weight for it would be
    meaningless and usually means a fold was built wrongly.
    """
    values = np.asarray(values)
    if values.ndim not in (1, 2):
        raise ValueError(f"class_weights takes targets [n] or [n, K], got shape {values.shape}")
    columns = values if values.ndim == 2 else values[:, None]
    bad = (columns < 0) | (columns >= num_classes)
    if np.any(bad):
        raise ValueError(f"target value {columns[bad][0]} is outside the {num_classes} classes 0..{num_classes - 1}")
    table = np.empty((columns.shape[1], num_classes), np.float32)
    for column, column_values in enumerate(columns.T):
        counts = np.bincount(column_values.astype(np.int64), minlength=num_classes).astype(np.float64)
        if np.any(counts == 0):
            where = f" in target column {column}" if values.ndim == 2 else ""
            raise UserError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training example{where}; "
                            "inverse-frequency class weights need every class on the training side (check the "
                            "fold, or train without class weights)")
        inverse = 1.0 / counts
        table[column] = inverse / inverse.mean()
    return table if values.ndim == 2 else table[0]


def sample_weights(values: np.ndarray, weights_table: np.ndarray) -> np.ndarray:
    """Per-sample weights from a ``class_weights`` table: w = table[t] ([C]) or table[k, t] per column k ([K, C]).

    Returns float32 shaped like ``values`` ([..., K] for a [K, C] table).
    """
    values, weights_table = np.asarray(values), np.asarray(weights_table, np.float32)
    if weights_table.ndim == 1:
        return weights_table[values]
    if weights_table.ndim != 2 or values.shape[-1:] != weights_table.shape[:1]:
        raise ValueError(f"targets of shape {values.shape} do not match a weights table of shape "
                         f"{weights_table.shape} (expected [C], or [K, C] with targets [..., K])")
    return weights_table[np.arange(weights_table.shape[0]), values]
