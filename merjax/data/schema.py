"""The example schema that every merjax dataset builder emits.

One example is one clip. Frames are the face crop of every frame of the clip
(onset..offset where the database gives it); landmarks are in crop coordinates.
Keeping one schema for every database lets every experiment run on every
database by changing ``--config.data.name``.

Action units: ``action_units`` is the database's AU string exactly as its
coding sheet writes it (CASME II ``'4+L10'``, SAMM ``'(R6 or R12)+R15'``; ''
where the database codes none, e.g. SMIC), and ``objective_class`` the
objective class of Davison et al. (2018) as an index 0..6 for I..VII (the
sheets write 1..7), -1 where unknown.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from merjax.faces.ibug68 import NUM_LANDMARKS

INDEX_KEYS = ("onset", "apex", "offset")
UNKNOWN_INDEX = -1
# Objective classes (Davison et al., 2018; reference/datasets-more.md §3), stored as their index 0..6.
OBJECTIVE_CLASSES = ("I", "II", "III", "IV", "V", "VI", "VII")
UNKNOWN_OBJECTIVE_CLASS = -1


def features(class_names: Sequence[str] | None, image_size: int | None = None) -> tfds.features.FeaturesDict:
    """Returns the TFDS features of the shared example schema.

    Args:
      class_names: the builder config's class set, in label order; None where
        the classes are known only at build time (``clip_folder`` reads them
        from the user's CSV): the builder then sets
        ``info.features["label"].names`` before writing examples.
      image_size: the square crop size, or None where crops vary in size.
    """
    return tfds.features.FeaturesDict({
        "frames": tfds.features.Tensor(
            shape=(None, image_size, image_size, 3), dtype=np.uint8, encoding="zlib"),
        "landmarks": tfds.features.Tensor(shape=(None, NUM_LANDMARKS, 2), dtype=np.float32),
        "label": (tfds.features.ClassLabel() if class_names is None
                  else tfds.features.ClassLabel(names=list(class_names))),
        "emotion": tfds.features.Text(),
        "subject": tfds.features.Text(),
        "clip": tfds.features.Text(),
        "dataset": tfds.features.Text(),
        "onset": tfds.features.Scalar(dtype=np.int32),
        "apex": tfds.features.Scalar(dtype=np.int32),
        "offset": tfds.features.Scalar(dtype=np.int32),
        "fps": tfds.features.Scalar(dtype=np.float32),
        "action_units": tfds.features.Text(),
        "objective_class": tfds.features.Scalar(dtype=np.int32),
    })


@functools.cache
def feature_names() -> frozenset[str]:
    """The names of the schema's features (an example lacking one was written by an older builder)."""
    return frozenset(features(None).keys())


def validate(example: Mapping[str, Any], where: str = "example") -> None:
    """Checks one example against the schema; raises ValueError naming ``where`` and the field."""
    missing = sorted(feature_names() - set(example))
    if missing:
        raise ValueError(f"{where}: no feature(s) {', '.join(missing)}: written by an older version of its "
                         "builder")
    frames = np.asarray(example["frames"])
    landmarks = np.asarray(example["landmarks"])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{where}: frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError(f"{where}: clip has no frames")
    if landmarks.shape != (frames.shape[0], NUM_LANDMARKS, 2):
        raise ValueError(
            f"{where}: landmarks must be [T={frames.shape[0]},{NUM_LANDMARKS},2], got {landmarks.shape}")
    num_frames = frames.shape[0]
    for key in INDEX_KEYS:
        value = int(example[key])
        if value != UNKNOWN_INDEX and not 0 <= value < num_frames:
            raise ValueError(f"{where}: {key}={value} is outside 0..{num_frames - 1} (use -1 for unknown)")
    objective_class = int(example["objective_class"])
    if not UNKNOWN_OBJECTIVE_CLASS <= objective_class < len(OBJECTIVE_CLASSES):
        raise ValueError(f"{where}: objective_class={objective_class} is outside 0..{len(OBJECTIVE_CLASSES) - 1} "
                         f"(I..VII; use {UNKNOWN_OBJECTIVE_CLASS} for unknown)")


def decode_text(value: Any) -> str:
    """TFDS returns Text features as bytes when read without TensorFlow."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
