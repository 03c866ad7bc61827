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
``max_memory_bytes`` it is written to ``.npy`` files under ``directory`` and
memory-mapped, so the loader reads only the windows it uses. A finished disk
cache is stamped with a key (a hash of the prefix's variables, the clips, the
endpoint, versions, augmentation, seed and dtype) and reused by a restarted run
with the same key; a cache without the stamp (an interrupted build) is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Iterable

import jax
import numpy as np

from merjax import files, stamps
from merjax.data.pipeline import Augmentation, ClipSet
from merjax.models.resnet import vggface2_preprocess

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


def prefix_fn(backbone: Any, backbone_variables: Any, endpoint: str) -> Callable[[np.ndarray], jax.Array]:
    """A jitted ``frames [B,H,W,3] -> endpoint output [B,...]`` of a ResNet backbone in eval mode."""
    @jax.jit
    def run(frames: jax.Array) -> jax.Array:
        features, _ = backbone.apply(backbone_variables, vggface2_preprocess(frames), train=False,
                                     stop_at=endpoint)
        return features

    return run


def _version(frames: np.ndarray, version: int, augmentation: Augmentation, seed: int,
             clip: int) -> np.ndarray:
    if version == 0:
        return frames
    rng = np.random.default_rng([seed, clip, version])
    return augmentation(frames, rng)


KEY_FILE = "cache_key.json"


def cache_key(backbone_variables: Any, clip_set: ClipSet, endpoint: str, variants: int,
              augmentation: Augmentation | None, seed: int, dtype: Any) -> str:
    """A hash of everything the cached features depend on: the prefix's variables, the clips, the versions."""
    digest = hashlib.sha256()
    leaves, treedef = jax.tree.flatten(backbone_variables)
    digest.update(str(treedef).encode())
    for leaf in leaves:
        stamps.update_with_array(digest, leaf)
    stamps.update_with_value(digest, [stamps.clip_set_digest(clip_set), endpoint, variants, repr(augmentation), seed,
                                      str(np.dtype(dtype))])
    return digest.hexdigest()


def _reuse(directory: str, key: str, shapes: list[tuple[int, ...]], dtype: Any) -> list[np.ndarray] | None:
    """The stored arrays of a finished cache with this key and these shapes, or None."""
    try:
        with open(os.path.join(directory, KEY_FILE)) as f:
            if json.load(f)["key"] != key:
                return None
        arrays = [np.load(os.path.join(directory, f"clip{clip:05d}.npy"), mmap_mode="r")
                  for clip in range(len(shapes))]
    except (OSError, ValueError, KeyError):
        return None
    if any(a.shape != shape or a.dtype != np.dtype(dtype) for a, shape in zip(arrays, shapes)):
        return None
    return arrays


def build_prefix_cache(
    backbone: Any,
    backbone_variables: Any,
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
      backbone: the ResNet module (``model.backbone`` of a classifier).
      backbone_variables: its variables (``{'params': ..., 'batch_stats': ...}``).
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
    run = prefix_fn(backbone, backbone_variables, endpoint)
    frame_shape = clip_set.frames[0].shape[1:]
    feature_shape = jax.eval_shape(run, jax.ShapeDtypeStruct((1, *frame_shape), np.uint8)).shape[1:]
    item_bytes = int(np.prod(feature_shape)) * np.dtype(dtype).itemsize
    num_bytes = int(clip_set.lengths.sum()) * variants * item_bytes
    on_disk = num_bytes > max_memory_bytes
    if on_disk and directory is None:
        raise ValueError(f"the {endpoint!r} cache needs {num_bytes / 2**30:.1f} GiB > "
                         f"{max_memory_bytes / 2**30:.1f} GiB of memory and no directory was given")
    shapes = [(variants, int(length), *feature_shape) for length in clip_set.lengths]
    if on_disk:
        os.makedirs(directory, exist_ok=True)
        key = cache_key(backbone_variables, clip_set, endpoint, variants, augmentation, seed, dtype)
        reused = _reuse(directory, key, shapes, dtype)
        if reused is not None:
            features_set = clip_set.with_streams({"features": [array[0] for array in reused]}, {"features": reused})
            return PrefixCache(endpoint=endpoint, clip_set=features_set, variants=reused, num_bytes=num_bytes,
                               location=directory, reused=True)
        if os.path.exists(os.path.join(directory, KEY_FILE)):
            os.remove(os.path.join(directory, KEY_FILE))

    def allocate(clip: int) -> np.ndarray:
        shape = shapes[clip]
        if not on_disk:
            return np.empty(shape, dtype)
        path = os.path.join(directory, f"clip{clip:05d}.npy")
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    stored = [allocate(clip) for clip in range(len(clip_set))]
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
    for array in stored:
        if isinstance(array, np.memmap):
            array.flush()
    if on_disk:
        files.atomic_write_json(os.path.join(directory, KEY_FILE), {"key": key, "endpoint": endpoint})
    features_set = clip_set.with_streams({"features": [array[0] for array in stored]}, {"features": stored})
    return PrefixCache(endpoint=endpoint, clip_set=features_set, variants=stored, num_bytes=num_bytes,
                       location=directory if on_disk else "memory")
