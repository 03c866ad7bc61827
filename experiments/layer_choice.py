"""The per-fold choice of l_s that ``experiments.gradcam_layers`` writes and the CV engine reads.

Seed 001 freezes the VGGFace2 ResNet-50 up to the layer before l_s and picks l_s
from Grad-CAM heatmaps. A choice made on a fold's test subjects would let those
subjects shape the model that is then tested on them, so ``gradcam_layers``
chooses l_s separately for every outer fold, from subjects of that fold's
training side only, and writes ``gradcam_scores.json``: per fold the
recommended layer and its ``freeze_until`` endpoint, plus a *stamp* of what the
choice was computed on (the configuration, the dataset folder and every fold's
train / val / test clip ids).

``freeze_until_per_fold`` is the reader a cross-validation run uses
(``--config.train.freeze_from=PATH``). It hands out a fold's endpoint only
when the file was made for the same data, protocol, seed and model as the run
and for exactly the run's folds, and refuses a file whose layers were scored
on the test subjects (``gradcam.score_on='test (leaks)'``).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from experiments.workdir import config_dict
from merjax import files, stamps
from merjax.data import protocols
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError
from merjax.models import registry

# gradcam.score_on: score the held-out training-side subjects of each fold (leak-free), or the fold's test
# subjects as seed 001 most likely did (opt-in, for comparison only: its output is refused below).
SCORE_ON_SELECTION = "selection"
SCORE_ON_TEST = "test (leaks)"
SCORE_ON = (SCORE_ON_SELECTION, SCORE_ON_TEST)
# Config keys (dotted; a key also covers the keys below it) that must be equal in the Grad-CAM run and the
# CV run: they decide the clips, the folds and the network whose layers were scored.
COMPARED_KEYS = ("data.name", "data.image_size", "data.faces", "model.weights", "model.backbone",
                 "protocol.kind", "protocol.k", "protocol.train", "protocol.test", "protocol.val_subjects", "seed")
RERUN = "python -m experiments.gradcam_layers"
SEED_FIELD = "{seed}"   # in train.freeze_from: each run's seed, so that a run over seeds reads one file per seed


def choice_file(template: str, seed: int) -> str:
    """The ``gradcam_scores.json`` a run of ``seed`` reads: ``template`` with ``{seed}`` replaced."""
    return template.replace(SEED_FIELD, str(seed))


def fold_clips(folds: Sequence[protocols.Fold], clip_ids: np.ndarray) -> dict[str, dict[str, list[str]]]:
    """Every fold's train / val / test clip ids, by fold name."""
    clip_ids = np.asarray(clip_ids)
    return {fold.name: {side: clip_ids[getattr(fold, side)].tolist() for side in protocols.SIDES} for fold in folds}


def stamp(config: ml_collections.ConfigDict, clip_set: ClipSet, folds: Sequence[protocols.Fold]) -> dict[str, Any]:
    """What a Grad-CAM layer choice was computed on, for ``freeze_until_per_fold`` to check."""
    return {"score_on": config.gradcam.score_on, "dataset": clip_set.name, "data_dir": config.data.data_dir,
            "folds": fold_clips(folds, clip_set.clip_ids), "config": config_dict(config)}


def _compared(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in stamps.flatten(config).items()
            if any(key == k or key.startswith(f"{k}.") for k in COMPARED_KEYS)}


def _override(key: str, value: Any) -> str:
    text = str(tuple(value)) if isinstance(value, list) else str(value)
    return shlex.quote(f"--config.{key}={text}")


def _rerun(path: str, config: ml_collections.ConfigDict, overrides: Sequence[str]) -> str:
    """The command that makes ``path`` again for a run of ``config`` (its preset, with ``overrides``)."""
    preset = [f"--config=experiments/configs/gradcam_layers.py:{config.preset}"] if config.get("preset") else []
    workdir = f"--workdir={os.path.dirname(os.path.abspath(path))}"
    return f"rerun `{' '.join([RERUN, *preset, *overrides, workdir, '--overwrite'])}`"


def _differing_clips(fold: str, side: str, recorded: Sequence[str], wanted: Sequence[str]) -> str:
    only_file, only_run = sorted(set(recorded) - set(wanted)), sorted(set(wanted) - set(recorded))
    parts = [f"{len(only_file)} only in the file" + (f" (e.g. {only_file[0]!r})" if only_file else ""),
             f"{len(only_run)} only in this run" + (f" (e.g. {only_run[0]!r})" if only_run else "")]
    return f"{fold} {side} clips differ: {', '.join(parts)}"


def freeze_until_per_fold(path: str, config: ml_collections.ConfigDict, folds: list[protocols.Fold],
                          clip_ids: np.ndarray) -> dict[str, str]:
    """Fold name -> the ``freeze_until`` endpoint chosen for it ('' when l_s is the first layer: nothing frozen).

    Args:
      path: a ``gradcam_scores.json`` written by ``experiments.gradcam_layers``.
      config: the configuration of the run that will use the choice.
      folds: the run's folds (``experiments.cv.make_folds``).
      clip_ids: the run's clip ids (``ClipSet.clip_ids``), which the folds index.

    Raises:
      UserError: in one line naming what is wrong and the command that fixes it, when the file is
        missing or unreadable, was scored on test subjects, was made with another dataset, protocol,
        seed or model (the keys are named), lacks one of the run's folds, or holds other clips for one.
    """
    choice = files.read_json(path, "Grad-CAM layer choice (train.freeze_from)")
    recorded = choice.get("stamp") if isinstance(choice, dict) else None

    def refuse(problem: str, *overrides: str) -> UserError:
        return UserError(f"{path} {problem}; {_rerun(path, config, overrides)}")

    if not isinstance(recorded, dict) or not isinstance(choice.get("folds"), dict):
        raise refuse("is not a per-fold layer choice of experiments.gradcam_layers (no stamp or folds)")
    if recorded.get("score_on") != SCORE_ON_SELECTION:
        raise refuse(f"scored the layers on the folds' test subjects (gradcam.score_on="
                     f"{recorded.get('score_on')!r}), so its choices saw the subjects they would be tested on",
                     _override("gradcam.score_on", SCORE_ON_SELECTION))
    before, wanted = _compared(recorded.get("config", {})), _compared(config_dict(config))
    changed = stamps.differences(before, wanted)
    if changed:
        raise refuse(f"was computed for another run ({'; '.join(changed)})",
                     *(_override(key, value) for key, value in sorted(wanted.items()) if before.get(key) != value))
    wanted_clips = fold_clips(folds, clip_ids)
    endpoints = registry.backbone_endpoints(config.model)
    chosen = {}
    for fold in folds:
        if fold.name not in recorded["folds"] or fold.name not in choice["folds"]:
            raise refuse(f"has no layer choice for {fold.name} (it has {sorted(choice['folds'])})",
                         _override("gradcam.folds", "all"))
        for side in protocols.SIDES:
            before_clips, wanted_side = recorded["folds"][fold.name][side], wanted_clips[fold.name][side]
            if sorted(before_clips) != sorted(wanted_side):
                raise refuse(f"was computed on other folds "
                             f"({_differing_clips(fold.name, side, before_clips, wanted_side)})")
        entry = choice["folds"][fold.name]
        seen = set(entry.get("selection_clips", [])) | set(entry.get("training_clips", []))
        tested = sorted(seen & set(wanted_clips[fold.name]["test"]))
        if tested:
            raise refuse(f"made the choice for {fold.name} with its test clip {tested[0]!r}")
        freeze_until = entry.get("freeze_until")
        if freeze_until != "" and freeze_until not in endpoints:
            raise refuse(f"chose freeze_until={freeze_until!r} for {fold.name}, not an endpoint of this run's "
                         f"backbone {endpoints}")
        chosen[fold.name] = freeze_until
    return chosen
