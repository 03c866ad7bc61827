"""Runs made of stages: each stage a sampler, a model, a loss, an optimiser and schedule, its epochs, and
where its parameters start.

``config.stages`` maps stage names to the keys each overrides in the shared
config (its sampler, model, loss, train, init, scope) and ``config.stage_order``
lists them in run order; an empty ``stages`` is one stage, ``main``, made of
the config itself. A stage with
``init.from_stage`` starts from the parameters an earlier stage ended with —
of the same fold (scope ``fold``) or of the run (scope ``run``) — copying the
subtrees ``init.include`` names (all when empty) except those ``init.exclude``
names; the rest keep their fresh initial values (a head swap, a new temporal model).

A stage of scope ``run`` is trained once, on all clips of its own data: it may
not train on the run's data, since every clip of the run is a test clip of some
fold (no test subject in an earlier stage whose output a later stage uses).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from merjax.errors import UserError

SCOPES = ("fold", "run")
MAIN = "main"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a run: its name and its full config (the shared config with the stage's overrides)."""

    name: str
    config: ml_collections.ConfigDict

    @property
    def scope(self) -> str:
        return self.config.scope

    @property
    def init_from(self) -> str:
        return self.config.init.from_stage


def _override(node: ml_collections.ConfigDict, overrides: Mapping[str, Any], where: str) -> None:
    for key, value in overrides.items():
        if key not in node:
            raise UserError(f"--config.{where}.{key}: no such key in the config (a stage overrides existing keys)")
        if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, Mapping) and key != "target_weights":
            _override(node[key], value, f"{where}.{key}")
        else:
            with node.ignore_type():
                node[key] = value


def resolve(config: ml_collections.ConfigDict) -> list[Stage]:
    """The run's stages in order, each with its resolved config.

    Raises:
      UserError: for an override of a key that does not exist, an ``init.from_stage``
        that is not an earlier stage, an unknown scope, a stage of scope
        ``run`` on the run's own data, or a fold stage starting from a run stage
        of another model.
    """
    if not config.stages:
        _check_alone(config)
        return [Stage(MAIN, config)]
    order = tuple(config.stage_order)
    if sorted(order) != sorted(config.stages):
        raise UserError(f"--config.stage_order={order}: must list every stage of --config.stages "
                        f"({sorted(config.stages)}) once, in run order")
    shared = config.copy_and_resolve_references()
    with shared.unlocked():
        shared.stages = ml_collections.ConfigDict()
        shared.stage_order = ()
    stages: list[Stage] = []
    for name in order:
        overrides = config.stages[name]
        stage_config = shared.copy_and_resolve_references()
        overrides = overrides.to_dict() if isinstance(overrides, ml_collections.ConfigDict) else dict(overrides)
        if "stages" in overrides or "stage_order" in overrides:
            raise UserError(f"--config.stages.{name}: a stage cannot hold stages")
        _override(stage_config, overrides, f"stages.{name}")
        where = f"--config.stages.{name}"
        if stage_config.scope not in SCOPES:
            raise UserError(f"{where}.scope={stage_config.scope!r}: choose one of {SCOPES}")
        source = stage_config.init.from_stage
        earlier = [stage.name for stage in stages]
        if source and source not in earlier:
            raise UserError(f"{where}.init.from_stage={source!r}: must name an earlier stage, one of {earlier}")
        if stage_config.scope == "run" and stage_config.data.name == config.data.name:
            raise UserError(f"{where}.scope='run' trains once on all clips of {config.data.name}, which are the "
                            f"folds' test clips: give the stage other data (--config.stages.{name}.data.name) or "
                            f"scope 'fold'")
        if stage_config.scope == "run" and source and stages[earlier.index(source)].scope == "fold":
            raise UserError(f"{where}: a stage of scope 'run' cannot start from the fold stage {source!r}")
        stages.append(Stage(name, stage_config))
    return stages


def _check_alone(config: ml_collections.ConfigDict) -> None:
    if config.init.from_stage:
        raise UserError(f"--config.init.from_stage={config.init.from_stage!r}: a run of one stage has no earlier stage")
    if config.scope != "fold":
        raise UserError(f"--config.scope={config.scope!r}: a run of one stage is trained per fold ('fold')")


def _matches(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


def transfer(fresh: Mapping[str, Any], earlier: Mapping[str, Any], include: tuple[str, ...],
             exclude: tuple[str, ...], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``fresh`` variables with the subtrees of ``earlier`` that ``include`` names (all when empty) and
    ``exclude`` does not; returns them and a record (parameters copied, subtrees kept fresh).

    Paths are '/'-joined module paths inside a collection, e.g. ``backbone`` or
    ``backbone/layer1``; the same path is copied in ``params`` and ``batch_stats``.

    Raises:
      UserError: when ``include`` names nothing, or a copied parameter differs in
        shape from the earlier stage's (naming the path), or is missing there.
    """
    variables: dict[str, Any] = {}
    copied, kept = [], set()
    for collection, tree in fresh.items():
        flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
        source = traverse_util.flatten_dict(jax.device_get(earlier.get(collection, {})), sep="/")
        for path, value in flat.items():
            if (include and not _matches(path, include)) or _matches(path, exclude):
                kept.add(path.split("/")[0])
                continue
            if path not in source:
                raise UserError(f"{where}: {collection}/{path} is not in the earlier stage's variables; "
                                f"narrow init.include or add it to init.exclude")
            if np.shape(source[path]) != np.shape(value):
                raise UserError(f"{where}: {collection}/{path} has shape {np.shape(value)} here and "
                                f"{np.shape(source[path])} in the earlier stage; add it to init.exclude")
            flat[path] = source[path]
            copied.append(f"{collection}/{path}")
        variables[collection] = traverse_util.unflatten_dict(flat, sep="/")
    if not copied:
        raise UserError(f"{where}: init.include={include} copies nothing from the earlier stage")
    return variables, {"copied_parameters": len(copied), "fresh_subtrees": sorted(kept)}
