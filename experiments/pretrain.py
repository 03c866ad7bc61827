"""Pretrains a backbone on the synthetic face corpus: the embedded stand-in for VGGFace2.

``python -m experiments.pretrain [--config=experiments/configs/pretrain.py[:PRESET]] [--config.KEY=VALUE ...]``

Seed 001 fine-tunes a VGGFace2 ResNet-50; those weights cannot ship. This
trains the configured backbone as a frame classifier on ``synthetic_faces``
(rendered faces of identities no synthetic micro-expression dataset uses, in
seed 004's nine macro-expressions; ``datasets/synthetic_faces``) through the
engine (``experiments.cv``: one stage, one fold whose test side is held out,
checkpoints per epoch, resumed when interrupted) and exports the backbone's
variables as a merjax backbone file, ``backbone.msgpack`` with its
``backbone.json`` description, which ``--config.model.weights`` accepts
(``merjax.weights.backbone.import_merjax_backbone``).

The weights are kept under ``<data.data_dir>/pretrained/<digest>/``, where the
digest is that of the pretraining's stamp (``pretraining_stamp``: its whole
config — backbone, input size, task, schedule, its own fixed seed — and the
corpus's name, version and builder config). The command fills that cache (and
reuses it: a second run prints the same file); a run whose
``config.model.weights`` is ``WEIGHTS_SPEC`` gets its file from
``ensure_weights(config)``, which pretrains first when the file is missing.
The runs of seeds 0, 1, 2 share one pretraining. A folder whose files were made
under another stamp is refused, never mixed; a process waits while another
pretrains into the same folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import time
from typing import Any, Iterator

import ml_collections
import numpy as np

from datasets import build
from experiments import cv
from experiments import workdir as workdir_lib
from experiments.configs import pretrain as pretrain_config
from experiments.configs.validate import validate
from merjax import files, stamps
from merjax.data import protocols
from merjax.data import targets as targets_lib
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError
from merjax.weights import backbone as backbone_weights

WEIGHTS_SPEC = pretrain_config.WEIGHTS_SPEC
PRETRAINED_DIR = "pretrained"            # under data.data_dir
WEIGHTS_FILE = "backbone.msgpack"        # with backbone.json beside it
STAGE = "pretrain"                       # the engine's stage folder inside the cache folder
LOCK_FILE = ".lock"
# What a run passes on to its pretraining: the backbone and its compute dtype, the input size, the data dir.
RUN_KEYS = ("model.backbone", "model.dtype", "data.image_size", "data.data_dir")


def pretraining_config(run_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The pretraining a run asks for with ``model.weights=WEIGHTS_SPEC[:PRESET]``: the preset's config with the
    run's backbone, dtype, input size and data dir (``RUN_KEYS``); nothing else of the run (not its seed)."""
    config = pretrain_config.get_config(pretrain_config.spec_preset(run_config.model.weights))
    with config.unlocked():
        for key in RUN_KEYS:
            section, name = key.split(".")
            value = run_config[section][name]
            config[section][name] = (ml_collections.ConfigDict(value.to_dict())
                                     if isinstance(value, ml_collections.ConfigDict) else value)
    return config


def check(config: ml_collections.ConfigDict) -> None:
    """``validate`` plus the pretraining's own keys: the data a ``synthetic_faces`` corpus, the task, held_out."""
    validate(config)
    if build.split_name(config.data.name)[0] != "synthetic_faces":
        raise UserError(f"--config.data.name={config.data.name!r}: pretraining reads a synthetic_faces corpus "
                        f"(e.g. synthetic_faces/default)")
    if config.pretrain.task not in pretrain_config.TASKS:
        raise UserError(f"--config.pretrain.task={config.pretrain.task!r}: choose one of {pretrain_config.TASKS}")
    if config.pretrain.task == "expression" and not (isinstance(config.pretrain.held_out, int)
                                                     and config.pretrain.held_out >= 1):
        raise UserError(f"--config.pretrain.held_out={config.pretrain.held_out!r}: must be an integer >= 1 "
                        f"(identities the expression task is tested on)")


def corpus_stamp(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What the corpus's images depend on: its builder's name and version and every field of its builder config."""
    builder_class, config_name = build.resolve_name(config.data.name)
    builder_config = next(c for c in builder_class.BUILDER_CONFIGS if c.name == config_name)
    own = {field.name: getattr(builder_config, field.name) for field in dataclasses.fields(builder_config)
           if field.name not in ("description", "release_notes", "supported_versions", "tags")}
    return {"name": config.data.name, "version": str(builder_class.VERSION), "config": stamps.flatten(own)}


def pretraining_stamp(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What the weights depend on: the pretraining config (without where data is kept) and the corpus."""
    values = workdir_lib.results_config(config)
    values["data"].pop("data_dir", None)
    return {"config": values, "corpus": corpus_stamp(config)}


def weights_directory(config: ml_collections.ConfigDict) -> str:
    """``<data.data_dir>/pretrained/<digest of the stamp>``: one folder per pretraining."""
    digest = stamps.digest_value(pretraining_stamp(config))[:16]
    return os.path.join(os.path.expanduser(config.data.data_dir), PRETRAINED_DIR, digest)


def command(config: ml_collections.ConfigDict) -> str:
    """The command line that trains (or finds) these weights: the preset's config with the run's keys."""
    words = ["python -m experiments.pretrain", f"--config=experiments/configs/pretrain.py:{config.preset}"]
    preset = pretrain_config.get_config(config.preset)
    for key, value in sorted(stamps.flatten(workdir_lib.config_dict(config)).items()):
        if value != stamps.flatten(workdir_lib.config_dict(preset)).get(key):
            shown = tuple(value) if isinstance(value, list) else value
            words.append(f"--config.{key}={shown!r}" if isinstance(value, str) else f"--config.{key}={shown}")
    return " ".join(words)


def task_clips(config: ml_collections.ConfigDict, clip_set: ClipSet) -> ClipSet:
    """The corpus labelled for the task: as built (expression) or by identity (the ``identity`` target)."""
    if config.pretrain.task == "expression":
        return clip_set
    values, _ = targets_lib.TARGETS["identity"](clip_set)
    names = tuple(np.unique(protocols.subject_keys(clip_set.datasets, clip_set.subjects)).tolist())
    return dataclasses.replace(clip_set, labels=values, class_names=names)


def held_out_fold(config: ml_collections.ConfigDict, corpus: ClipSet) -> protocols.Fold:
    """The one fold of the corpus (labelled by expression): train on the rest, test on what the task holds out.

    expression: every image of the last ``pretrain.held_out`` identities (sorted), never trained on;
    identity: per identity ``i`` (sorted) one image of expression ``i mod 9`` (its first clip id): a pose and
    expression of the identity never trained on.
    """
    names = sorted(set(corpus.subjects.tolist()))
    if config.pretrain.task == "expression":
        if config.pretrain.held_out >= len(names):
            raise UserError(f"--config.pretrain.held_out={config.pretrain.held_out}: {corpus.name} has "
                            f"{len(names)} identities; hold out fewer")
        test = np.flatnonzero(np.isin(corpus.subjects, names[len(names) - config.pretrain.held_out:]))
    else:
        chosen = []
        for index, name in enumerate(names):
            own = np.flatnonzero((corpus.subjects == name) & (corpus.labels == index % corpus.num_classes))
            chosen.append(own[np.argmin(corpus.clip_ids[own])])
        test = np.sort(np.asarray(chosen))
    train = np.setdiff1d(np.arange(len(corpus)), test)
    return protocols.Fold(name=STAGE, train=train, val=np.zeros(0, np.int64), test=test)


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """Holds an exclusive lock on ``directory`` (waiting while another process holds it)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, LOCK_FILE), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_weights(config: ml_collections.ConfigDict, directory: str) -> str | None:
    """The weights file in ``directory`` when it was made under this config's stamp; None when there is none.

    Raises:
      UserError: when it was made under another stamp (naming what differs).
    """
    path = os.path.join(directory, WEIGHTS_FILE)
    description_file = backbone_weights.description_path(path)
    if not os.path.exists(path) or not os.path.exists(description_file):
        return None
    recorded = files.read_json(description_file, "backbone description").get("stamp", {})
    changed = stamps.differences(recorded, pretraining_stamp(config))
    if changed:
        raise UserError(f"{path} was pretrained from something else ({'; '.join(changed)}); delete {directory} "
                        f"to pretrain again")
    return path


def train(config: ml_collections.ConfigDict, directory: str) -> str:
    """Pretrains through the engine into ``directory`` (resuming its checkpoints) and exports the backbone."""
    started = time.time()
    corpus = cv.load_clip_set(config)
    fold = held_out_fold(config, corpus)
    clip_set = task_clips(config, corpus)
    stage_dir = os.path.join(directory, STAGE)
    setup = cv.setup_stage(config, clip_set, stage_dir)
    stamp = cv.fold_stamp(cv.run_stamp(config, clip_set), clip_set, fold, STAGE, config.train.freeze_until)
    result = cv.run_stage_fold(setup, fold, 0, stage_dir, stamp, keep_variables=True)
    variables = cv.load_variables(stage_dir)
    tested = result["test"]
    held_out = {
        "task": config.pretrain.task,
        "what": ("images of identities never trained on" if config.pretrain.task == "expression"
                 else "one image per identity, never trained on"),
        "images": len(tested["labels"]),
        "classes": clip_set.num_classes,
        "accuracy": round(float(np.mean(np.asarray(tested["labels"]) == np.asarray(tested["predictions"]))), 4),
    }
    path = os.path.join(directory, WEIGHTS_FILE)
    backbone_weights.save_backbone(
        path, {collection: tree["backbone"] for collection, tree in variables.items() if "backbone" in tree},
        {"backbone": backbone_weights.architecture(config.model.backbone),
         "image_size": int(config.data.image_size),
         "dtype": config.model.dtype,
         "trained_on": f"{clip_set.name} ({len(fold.train)} images), task {config.pretrain.task}",
         "held_out": held_out,
         "final_train_accuracy": result["history"][-1].get("train_accuracy") if result["history"] else None,
         "wall_seconds": round(time.time() - started, 1),
         "command": command(config),
         "stamp": pretraining_stamp(config)})
    return path


def ensure_pretrained(config: ml_collections.ConfigDict) -> tuple[str, bool]:
    """The weights file of pretraining ``config`` and whether this call trained it (else it was cached).

    Raises:
      UserError: for a bad config value, or a cache folder made under another stamp.
    """
    check(config)
    directory = weights_directory(config)
    with locked(directory):
        path = cached_weights(config, directory)
        if path is not None:
            return path, False
        return train(config, directory), True


def ensure_weights(run_config: ml_collections.ConfigDict) -> str:
    """The backbone file a run's ``config.model.weights`` names: the value itself, or for ``WEIGHTS_SPEC[:PRESET]``
    the cached synthetic pretraining of the run's backbone at its input size (``pretraining_config``), trained
    first when missing (minutes; the corpus is built first when missing).

    Raises:
      UserError: for an unknown pretraining preset, or a cache folder made under another stamp.
    """
    weights = run_config.model.weights
    if not pretrain_config.is_spec(weights):
        return weights
    return ensure_pretrained(pretraining_config(run_config))[0]


def with_weights_resolved(run_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``run_config`` with ``model.weights`` resolved by ``ensure_weights`` (the run config itself when it names a
    file or nothing): called before a run stamps its folds, so that their stamps name the pretrained file, whose
    folder is the digest of the pretraining's stamp."""
    if not pretrain_config.is_spec(run_config.model.weights):
        return run_config
    resolved = run_config.copy_and_resolve_references()
    with resolved.unlocked():
        resolved.model.weights = ensure_weights(run_config)
    return resolved


def describe(path: str) -> list[str]:
    """Lines for the user: the file, what it was trained on, its held-out accuracy, the command that makes it."""
    description = files.read_json(backbone_weights.description_path(path), "backbone description")
    held_out = description["held_out"]
    return [
        f"weights: {path}",
        f"trained on {description['trained_on']} in {description['wall_seconds']} s; final training accuracy "
        f"{description['final_train_accuracy']}",
        f"held out ({held_out['what']}): accuracy {held_out['accuracy']:.3f} over {held_out['images']} images, "
        f"{held_out['classes']} classes (chance {1 / held_out['classes']:.3f})",
        f"use it: --config.model.weights={path}  (or --config.model.weights={WEIGHTS_SPEC} in a run of this "
        f"backbone and input size)",
        f"reproduce: {description['command']}",
    ]


def main() -> None:
    from absl import app, flags, logging
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", os.path.join(os.path.dirname(__file__), "configs", "pretrain.py"), "pretraining config[:preset]",
        lock_config=True)
    verbose_flag = flags.DEFINE_bool("verbose", False, "print the traceback of a user error too")

    def run(argv: list[str]) -> None:
        del argv
        logging.set_verbosity(logging.WARNING)
        with build.user_errors_as_one_line(verbose_flag.value):
            path, trained = ensure_pretrained(config_flag.value)
            if not trained:
                print("already pretrained (same stamp): reused")
            print("\n".join(describe(path)))

    app.run(run)


if __name__ == "__main__":
    main()
