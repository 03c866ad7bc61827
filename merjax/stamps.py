"""Stamps: what a reused artefact depends on, so that a run never mixes configurations.

Anything a run reuses from disk — a fold's result, its checkpoints, a feature
cache, a stage's output — is written beside a *stamp*: a JSON dict of what it
was computed from (the configuration, a digest of the data it saw, the fold's
clips). A later run recomputes its own stamp and reuses the artefact only when
the two are equal; otherwise it refuses, naming the keys that differ
(``differences``), instead of silently mixing one configuration's outputs into
another's results.

Digests are SHA-256 over a canonical byte encoding: JSON with sorted keys for
values, dtype + shape + raw bytes for arrays.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

import numpy as np

MISSING = "(absent)"


def update_with_array(hasher: Any, array: Any) -> None:
    """Feeds ``array``'s dtype, shape and bytes to ``hasher`` (so equal bytes of other shapes differ)."""
    array = np.ascontiguousarray(np.asarray(array))
    hasher.update(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(memoryview(array).cast("B"))


def update_with_value(hasher: Any, value: Any) -> None:
    """Feeds a JSON-serialisable value to ``hasher`` in a canonical encoding (sorted keys)."""
    hasher.update(json.dumps(value, sort_keys=True, default=str).encode())


def digest_value(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value (canonical: sorted keys)."""
    hasher = hashlib.sha256()
    update_with_value(hasher, value)
    return hasher.hexdigest()


def digest_file(path: Any, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def digest_arrays(arrays: Iterable[Any]) -> str:
    """SHA-256 of a sequence of arrays (dtype, shape and bytes of each, in order)."""
    hasher = hashlib.sha256()
    for array in arrays:
        update_with_array(hasher, array)
    return hasher.hexdigest()


def clip_set_digest(clip_set: Any) -> str:
    """SHA-256 of everything a run sees of a ``ClipSet``: ids, labels, subjects, action units, every stream
    (frames, region crops, ...), landmarks, apexes, fps.

    Computed on the clips as loaded (after resizing and clip operations), so two
    runs get the same digest exactly when they train and test on the same
    pixels and labels.
    """
    hasher = hashlib.sha256()
    update_with_value(hasher, [clip_set.name, list(clip_set.class_names), clip_set.clip_ids.tolist(),
                               clip_set.subjects.tolist(), clip_set.datasets.tolist(),
                               clip_set.action_units.tolist(), sorted(clip_set.streams)])
    for array in (clip_set.labels, clip_set.fps, clip_set.apexes, clip_set.objective_classes):
        update_with_array(hasher, array)
    for clip, landmarks in enumerate(clip_set.landmarks):
        for stream in sorted(clip_set.streams):
            update_with_array(hasher, clip_set.streams[stream][clip])
        update_with_array(hasher, landmarks)
    return hasher.hexdigest()


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; tuples become lists (as they read back from JSON)."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(flatten(item, f"{name}."))
        else:
            flat[name] = list(item) if isinstance(item, tuple) else item
    return flat


def _shown(value: Any) -> str:
    if value is MISSING:
        return MISSING
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any],
                ignored: Iterable[str] = ()) -> list[str]:
    """``key: recorded -> wanted`` for every dotted key whose value differs (a key on one side only too)."""
    old, new, skip = flatten(recorded), flatten(wanted), set(ignored)
    lines = []
    for key in sorted(set(old) | set(new)):
        if key in skip:
            continue
        before, after = old.get(key, MISSING), new.get(key, MISSING)
        if before != after:
            lines.append(f"{key}: {_shown(before)} -> {_shown(after)}")
    return lines
