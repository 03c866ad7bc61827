"""The frozen prefix of the backbone, computed once per frame and cached.

Seed 001 retrains the VGGFace2 ResNet-50 from a layer l_s and freezes the
layers before it. A frozen prefix with BatchNorm on running statistics is a
fixed function of the frame, so its output is computed once for every frame of
every clip and each epoch runs only the trainable suffix (a model with
``input_endpoint`` set). All folds of a run start from the same variables, so
one cache serves the whole cross-validation.

Augmentation happens on pixels, before the prefix, so it cannot be applied to
cached features. Instead the cache holds ``variants`` versions of every clip:
version 0 is the clip itself (used for evaluation) and versions 1.. are the
clip under fixed random flips/rotations drawn once at build time (clip-consistent,
as in training); a training sample draws one version at random each epoch.

Features are stored in ``dtype`` (float16 halves the memory; the suffix casts
them back to its compute dtype). When the cache would exceed
``max_memory_bytes`` it is written to an array store (``merjax.data.array_store``)
in ``directory`` and memory-mapped, so the loader reads only the windows it
uses. A finished disk cache is stamped with a key (a hash of the prefix's
variables, the clips, the endpoint, versions, augmentation, seed and dtype) and
reused by a restarted run with the same key; a cache without the stamp (an
interrupted build) is rebuilt.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import jax
import numpy as np

from merjax import stamps
from merjax.data import array_store
from merjax.data.batches import Augmentation
from merjax.data.pipeline import ClipSet

Progress = Callable[..., Iterable]


@dataclasses.dataclass(frozen=True)
class PrefixCache:
    """Cached prefix features of every clip of a ClipSet.

    ``clip_set`` is the original ClipSet with ``frames`` replaced by the features
    of version 0 ([T,h,w,c] per clip, or [T,d] for a pooled endpoint);
    ``variants[clip]`` is [K,T,...] with every version (version 0 included).
    """

    endpoint: str
    clip_set: ClipSet
    variants: list[np.ndarray]
    num_bytes: int
    location: str              # 'memory' or the directory of the .npy files
    reused: bool = False       # a finished disk cache of an earlier run with the same key

    @property
    def num_variants(self) -> int:
        return int(self.variants[0].shape[0])

    def describe(self) -> dict[str, Any]:
        first = self.variants[0]
        return {"endpoint": self.endpoint, "variants": self.num_variants,
                "feature_shape": list(first.shape[2:]), "dtype": str(first.dtype),
                "megabytes": round(self.num_bytes / 2**20, 2), "location": self.location, "reused": self.reused}


def _version(frames: np.ndarray, version: int, augmentation: Augmentation, seed: int,
             clip: int) -> np.ndarray:
    if version == 0:
        return frames
    rng = np.random.default_rng([seed, clip, version])
    return augmentation({"frames": frames}, rng)["frames"]


def build_prefix_cache(
    model: Any,
    variables: Any,
    clip_set: ClipSet,
    endpoint: str,
    *,
    batch_size: int,
    variants: int = 1,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    dtype: Any = np.float16,
    max_memory_bytes: int = 4 * 2**30,
    directory: str | None = None,
    progress: Progress = lambda iterable, **_: iterable,
) -> PrefixCache:
    """Runs the frozen prefix on every frame (and every augmented version) of ``clip_set``.

    Args:
      model: a model with a backbone and ``frame_features`` (``merjax.models.classifiers``).
      variables: its variables (``{'params': ..., 'batch_stats': ...}``).
      endpoint: the last frozen endpoint; its output is cached.
      batch_size: frames per prefix call.
      variants: versions per clip (1 = no augmentation); needs ``augmentation`` if > 1.
      dtype: storage dtype of the features.
      max_memory_bytes: above this, features go to memory-mapped files in ``directory``.
    """
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    if variants > 1 and augmentation is None:
        raise ValueError(f"variants={variants} needs an augmentation to make versions 1..{variants - 1}")
    run = jax.jit(lambda frames: model.apply(variables, frames, endpoint, method="frame_features"))
    backbone_variables = {collection: tree["backbone"] for collection, tree in variables.items()}
    frame_shape = clip_set.frames[0].shape[1:]
    feature_shape = jax.eval_shape(run, jax.ShapeDtypeStruct((1, *frame_shape), np.uint8)).shape[1:]
    item_bytes = int(np.prod(feature_shape)) * np.dtype(dtype).itemsize
    num_bytes = int(clip_set.lengths.sum()) * variants * item_bytes
    on_disk = array_store.needs_disk(num_bytes, max_memory_bytes, directory, f"the {endpoint!r} cache")
    specs = [array_store.ArraySpec((variants, int(length), *feature_shape), np.dtype(dtype))
             for length in clip_set.lengths]
    key = None
    if on_disk:
        # Everything the cached features depend on: the prefix's variables, the clips, the versions.
        key = array_store.key(backbone_variables, stamps.clip_set_digest(clip_set), endpoint, variants,
                              repr(augmentation), seed, str(np.dtype(dtype)))
        reused = array_store.open(directory, key, {"features": specs})
        if reused is not None:
            reused = reused["features"]
            features_set = clip_set.with_streams({"features": [array[0] for array in reused]}, {"features": reused})
            return PrefixCache(endpoint=endpoint, clip_set=features_set, variants=reused, num_bytes=num_bytes,
                               location=directory, reused=True)
    writer = array_store.Writer(directory if on_disk else None, key)
    stored = writer.allocate("features", specs)
    # Frames of all clips and versions, in fixed-size batches so the prefix compiles once.
    jobs = [(clip, version) for clip in range(len(clip_set)) for version in range(variants)]
    pending: list[tuple[int, int, np.ndarray]] = []

    def flush() -> None:
        frames = np.concatenate([f for _, _, f in pending])
        padded = np.zeros((batch_size, *frame_shape), np.uint8)
        outputs = []
        for begin in range(0, len(frames), batch_size):
            chunk = frames[begin:begin + batch_size]
            padded[:len(chunk)] = chunk
            outputs.append(np.asarray(run(padded))[:len(chunk)])
        features = np.concatenate(outputs)
        offset = 0
        for clip, version, clip_frames in pending:
            stored[clip][version] = features[offset:offset + len(clip_frames)]
            offset += len(clip_frames)
        pending.clear()

    queued = 0
    for clip, version in progress(jobs, desc=f"caching {endpoint} features", leave=False):
        frames = _version(clip_set.frames[clip], version, augmentation, seed, clip)
        pending.append((clip, version, frames))
        queued += len(frames)
        if queued >= 8 * batch_size:
            flush()
            queued = 0
    if pending:
        flush()
    stored = writer.finish(endpoint=endpoint)["features"]
    features_set = clip_set.with_streams({"features": [array[0] for array in stored]}, {"features": stored})
    return PrefixCache(endpoint=endpoint, clip_set=features_set, variants=stored, num_bytes=num_bytes,
                       location=directory if on_disk else "memory")
