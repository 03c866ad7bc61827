"""Training targets by name: what a model is trained to predict for each clip.

A target maps a clip set to one value per clip ([num_clips] class indices, or
[num_clips, K] for K columns, e.g. one class per face region) and its number of
classes. ``label`` is the clip's class; method issues add theirs (seed 002's
region targets with a "not me" class) by registering a function here.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from merjax.data import region_labels
from merjax.data.pipeline import ClipSet
from merjax.data.protocols import subject_keys
from merjax.errors import UserError

TargetFn = Callable[[ClipSet], tuple[np.ndarray, int]]
TARGETS: dict[str, TargetFn] = {}


def target(name: str) -> Callable[[TargetFn], TargetFn]:
    """Registers ``fn(clip_set) -> (values per clip, num_classes)`` as target ``name``."""
    def register(fn: TargetFn) -> TargetFn:
        TARGETS[name] = fn
        return fn
    return register


@target("label")
def clip_label(clip_set: ClipSet) -> tuple[np.ndarray, int]:
    """The clip's class in the dataset's class set."""
    return clip_set.labels.astype(np.int32), clip_set.num_classes


@target("identity")
def clip_identity(clip_set: ClipSet) -> tuple[np.ndarray, int]:
    """The clip's subject, as its index among the clip set's subjects (sorted ``<dataset>/<subject>`` keys, so
    that two databases' ``s1`` stay apart): VGGFace2's task, face identification."""
    subjects, index = np.unique(subject_keys(clip_set.datasets, clip_set.subjects), return_inverse=True)
    return index.astype(np.int32), len(subjects)


@target("region_labels_emotion")
def region_labels_emotion(clip_set: ClipSet) -> tuple[np.ndarray, int]:
    """Seed 002's class per face region ([num_clips, 6], last class "not me") by the seed's group's objective-class
    table (``merjax.data.region_labels``)."""
    labels = region_labels.region_labels(clip_set, "emotion")
    return labels.values, labels.num_classes


@target("region_labels_action_units")
def region_labels_action_units(clip_set: ClipSet) -> tuple[np.ndarray, int]:
    """Seed 002's class per face region from the clip's own AUs (clips that code none: the emotion table, counted
    in a warning; ``merjax.data.region_labels``)."""
    labels = region_labels.region_labels(clip_set, "action_units")
    return labels.values, labels.num_classes


def clip_targets(names: tuple[str, ...], clip_set: ClipSet) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The values per clip and the class counts of the named targets.

    Raises:
      UserError: for an unknown target, naming ``--config.targets`` and the choices.
    """
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise UserError(f"unknown target(s) {unknown} (--config.targets); choose from {sorted(TARGETS)}")
    values: dict[str, np.ndarray] = {}
    classes: Mapping[str, int] = {}
    for name in names:
        values[name], classes[name] = TARGETS[name](clip_set)
    return values, dict(classes)
