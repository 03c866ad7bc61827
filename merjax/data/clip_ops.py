"""Clip operations: per-clip transforms declared in the config, run once at load and cached on disk.

Seeds 002-004 look at more than the face crop: region crops (002, 003),
magnified clips, dynamic images and time-interpolated clips (003, 004). Each is
a fixed function of one clip, so it runs once per clip when the data is
loaded, never per epoch (DESIGN.md, "Speed by design"), and is kept on disk
with a stamp of everything it depends on.

The config lists the operations as strings, big_vision style::

    config.data.clip_ops = ("resize(size=112)", "crop_regions(template='seed002')")

Each string is ``name(key=value, ...)`` with literal values (numbers, strings,
tuples, ...; parsed with ``ast``, never evaluated) naming an operation
registered in ``CLIP_OPS`` with ``@clip_op(name, version)``. An operation is
``op(clip, **kwargs) -> clip``; a clip is a dict of numpy arrays:

* its streams: ``frames`` [T,H,W,3] uint8 and whatever earlier operations
  added (e.g. ``region_mouth`` [T,h,w,3], ``dynamic_image`` [H,W,3]);
* ``landmarks`` [T,68,2] float32, pixel coordinates of ``frames``;
* metadata ``fps`` and ``apex`` (0-d arrays).

It returns the clip's new dict (streams added, replaced or dropped;
``frames`` and ``landmarks`` kept); an operation that changes the time axis
(``resample_time``) returns the clip's new ``apex`` and ``fps`` too, and they
are stored with the result. The arrays it receives are read-only, so
an operation never alters the clip set it was given.

``apply_clip_ops`` runs the list on every clip and, with a ``cache_dir``,
stores the result with ``merjax.data.array_store`` under a key made of the
source's digest, the parsed specs and every operation's version; a later run
reuses it only under an equal key. Bump an operation's ``version`` whenever
its output changes for the same input.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from merjax import stamps
from merjax.data import array_store
from merjax.errors import UserError
from merjax.faces import crop, ibug68, regions

if TYPE_CHECKING:   # pipeline may import this module (resize_clip), so ClipSet is a name for annotations only
    from merjax.data.pipeline import ClipSet

Clip = dict[str, np.ndarray]
MirrorPairs = tuple[tuple[str, str], ...]
Progress = Callable[..., Iterable]

CONFIG_KEY = "--config.data.clip_ops"
STORE_FORMAT = 2                # 2: fps and apex stored with the streams (an op may change them)
METADATA = ("fps", "apex")      # per-clip scalars; an op that changes the time axis returns new ones


@dataclasses.dataclass(frozen=True)
class ClipOp:
    """A registered clip operation.

    Attributes:
      name: its name in specs.
      version: enters the cache stamp; bump it when the output changes.
      fn: ``fn(clip, **kwargs) -> clip``.
      mirror_pairs: optionally ``mirror_pairs(**kwargs) -> ((left, right), ...)``,
        the streams it adds that a horizontal flip swaps (``augment.flip_streams``).
    """

    name: str
    version: str
    fn: Callable[..., Clip]
    mirror_pairs: Callable[..., MirrorPairs] | None = None


CLIP_OPS: dict[str, ClipOp] = {}


def clip_op(name: str, version: str = "1", *, mirror_pairs: Callable[..., MirrorPairs] | None = None):
    """Registers ``fn(clip, **kwargs) -> clip`` in ``CLIP_OPS`` as ``name`` (a decorator)."""
    def register(fn: Callable[..., Clip]) -> Callable[..., Clip]:
        if name in CLIP_OPS:
            raise ValueError(f"clip op {name!r} is already registered (by {CLIP_OPS[name].fn.__qualname__})")
        CLIP_OPS[name] = ClipOp(name=name, version=str(version), fn=fn, mirror_pairs=mirror_pairs)
        return fn

    return register


# --------------------------------------------------------------------------- #
# Specs.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One parsed spec: the op's name and its keyword arguments (literal values)."""

    name: str
    kwargs: Mapping[str, Any]

    @property
    def op(self) -> ClipOp:
        return CLIP_OPS[self.name]

    def __str__(self) -> str:
        """The canonical spec (keywords sorted), as it enters the stamp."""
        return f"{self.name}({', '.join(f'{key}={value!r}' for key, value in sorted(self.kwargs.items()))})"


def _bad_spec(spec: Any, why: str) -> UserError:
    return UserError(f"{CONFIG_KEY} entry {spec!r}: {why}; write each op as name(key=value, ...) with literal "
                     f"values; registered ops: {', '.join(sorted(CLIP_OPS))}")


def parse_clip_op(spec: str) -> OpSpec:
    """Parses ``"name(key=value, ...)"`` (or a bare ``"name"``) against ``CLIP_OPS``.

    Raises:
      UserError: naming the spec, ``--config.data.clip_ops`` and the registered
        ops when the spec is not a call with literal keyword values, names no
        registered op, or passes arguments the op does not take.
    """
    if not isinstance(spec, str):
        raise _bad_spec(spec, f"is a {type(spec).__name__}, not a string")
    try:
        tree = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        raise _bad_spec(spec, "is not valid Python call syntax") from None
    if isinstance(tree, ast.Name):
        name, keywords = tree.id, []
    elif isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name):
        if tree.args:
            raise _bad_spec(spec, "has positional arguments; pass every value by name")
        name, keywords = tree.func.id, tree.keywords
    else:
        raise _bad_spec(spec, "is not a call name(...)")
    if name not in CLIP_OPS:
        raise _bad_spec(spec, f"{name!r} is not a registered op")
    kwargs = {}
    for keyword in keywords:
        if keyword.arg is None:
            raise _bad_spec(spec, "uses **; pass every value by name")
        if keyword.arg in kwargs:
            raise _bad_spec(spec, f"gives {keyword.arg!r} twice")
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError):
            raise _bad_spec(spec, f"the value of {keyword.arg!r} is not a literal "
                                  f"(a number, string, tuple, list or dict of them)") from None
    signature = inspect.signature(CLIP_OPS[name].fn)
    try:
        signature.bind({}, **kwargs)
    except TypeError as error:
        parameters = [str(p) for p in list(signature.parameters.values())[1:]]
        raise _bad_spec(spec, f"{error} ({name} takes {', '.join(parameters) or 'no arguments'})") from None
    return OpSpec(name, kwargs)


def parse_clip_ops(specs: str | Sequence[str]) -> list[OpSpec]:
    """Parses every spec of the config (a single string is one spec)."""
    return [parse_clip_op(spec) for spec in ([specs] if isinstance(specs, str) else specs)]


def mirror_pairs(specs: str | Sequence[str | OpSpec]) -> MirrorPairs:
    """The stream pairs a horizontal flip swaps, of every op in ``specs`` that adds paired streams."""
    pairs: list[tuple[str, str]] = []
    for spec in ([specs] if isinstance(specs, str) else specs):
        parsed = spec if isinstance(spec, OpSpec) else parse_clip_op(spec)
        if parsed.op.mirror_pairs is not None:
            pairs.extend(parsed.op.mirror_pairs(**parsed.kwargs))
    return tuple(pairs)


# --------------------------------------------------------------------------- #
# Operations.
# --------------------------------------------------------------------------- #

def resize_clip(frames: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes frames [T,H,W,C] to ``size`` x ``size`` and maps their landmarks [T,68,2] along.

    Resizing is ``merjax.faces.crop.resize_frames`` (``cv2.INTER_AREA`` when
    shrinking, ``cv2.INTER_LINEAR`` otherwise); landmarks map pixel centre to
    pixel centre, as cv2 does: u = (x + 0.5) * size / W - 0.5.
    """
    height, width = frames.shape[1:3]
    if (height, width) == (size, size):
        return frames, landmarks
    scale = np.asarray([size / width, size / height], np.float64)
    points = (np.asarray(landmarks, np.float64) + 0.5) * scale - 0.5
    return crop.resize_frames(frames, (size, size)), points.astype(np.float32)


@clip_op("resize", version="1")
def resize(clip: Clip, size: int) -> Clip:
    """``frames`` resized to ``size`` x ``size``; landmarks follow. Other streams are left as they are."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"{CONFIG_KEY}: resize(size={size!r}) needs a positive integer size")
    frames, landmarks = resize_clip(clip["frames"], clip["landmarks"], size)
    return {**clip, "frames": frames, "landmarks": landmarks}


@clip_op("resample_time", version="1")
def resample_time(clip: Clip, frames: int) -> Clip:
    """Every stream with a time axis linearly interpolated in time to ``frames`` frames; landmarks follow.

    A temporal normalisation (a linear stand-in for TIM, seed 004's ``tim``):
    output frame j samples the clip at t = j (T - 1) / (frames - 1), so the first
    and last frames are kept and a clip of any length spans the same number of
    frames. The apex index is mapped to the nearest output frame and fps scaled
    by (frames - 1) / (T - 1). Frames are rounded back to their dtype.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise UserError(f"{CONFIG_KEY}: resample_time(frames={frames!r}) needs an integer of at least 2")
    length = len(clip["frames"])
    if length < 2:
        raise UserError(f"resample_time needs at least 2 frames, the clip has {length}")
    position = np.arange(frames) * (length - 1) / (frames - 1)
    below = np.minimum(np.floor(position).astype(np.int64), length - 2)
    weight = position - below

    def interpolate(array: np.ndarray) -> np.ndarray:
        shape = (frames,) + (1,) * (array.ndim - 1)
        mixed = (array[below].astype(np.float64) * (1.0 - weight.reshape(shape))
                 + array[below + 1].astype(np.float64) * weight.reshape(shape))
        if np.issubdtype(array.dtype, np.integer):
            info = np.iinfo(array.dtype)
            mixed = np.clip(np.round(mixed), info.min, info.max)
        return mixed.astype(array.dtype)

    timed = {name: interpolate(value) for name, value in clip.items()
             if name not in METADATA and np.ndim(value) >= 1 and len(value) == length}
    scale = (frames - 1) / (length - 1)
    apex = int(clip["apex"])
    return {**clip, **timed, "apex": np.asarray(round(apex * scale) if apex >= 0 else -1, np.int32),
            "fps": np.asarray(float(clip["fps"]) * scale, np.float32)}


def region_stream(region: str, source: str = "frames") -> str:
    """The stream holding ``region``'s crops of stream ``source``: ``region_<region>`` for frames."""
    return f"region_{region}" if source == "frames" else f"{source}_region_{region}"


def _region_mirror_pairs(template: str, source: str = "frames") -> MirrorPairs:
    return tuple((region_stream(right, source), region_stream(left, source))
                 for right, left in regions.get_template(template).mirror_pairs)


@clip_op("crop_regions", version="1", mirror_pairs=_region_mirror_pairs)
def crop_regions(clip: Clip, template: str, source: str = "frames") -> Clip:
    """Adds one stream per region of a face template (``merjax.faces.regions``): ``region_<name>`` [T,h,w,3].

    The boxes come from the first frame's landmarks and stay fixed for the
    clip; each region is resized to the template's (width, height) for it.
    ``source`` names the stream to crop (default ``frames``; a stream without
    a time axis, e.g. ``dynamic_image`` [H,W,3], gives [h,w,3] crops named
    ``<source>_region_<name>``); it must share the frames' geometry, which the
    landmarks are in.
    """
    if source not in clip or source in METADATA or source == "landmarks":
        raise UserError(f"{CONFIG_KEY}: crop_regions(source={source!r}) names no stream of the clip; it has "
                        f"{sorted(k for k in clip if k not in METADATA and k != 'landmarks')}")
    pixels = clip[source]
    timeless = pixels.ndim == 3
    if pixels.shape[-3:-1] != clip["frames"].shape[1:3]:
        raise UserError(f"{CONFIG_KEY}: crop_regions(source={source!r}) has images of {pixels.shape[-3:-1]} "
                        f"but the landmarks are pixels of frames {clip['frames'].shape[1:3]}")
    crops = regions.crop_regions(template, pixels[None] if timeless else pixels, clip["landmarks"])
    return {**clip, **{region_stream(region, source): array[0] if timeless else array
                       for region, array in crops.items()}}


# --------------------------------------------------------------------------- #
# Applying the operations to a clip set.
# --------------------------------------------------------------------------- #

def _read_only(array: Any) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _clip(clip_set: ClipSet, index: int) -> Clip:
    clip = {name: _read_only(arrays[index]) for name, arrays in clip_set.streams.items()}
    clip["landmarks"] = _read_only(clip_set.landmarks[index])
    clip["fps"] = _read_only(clip_set.fps[index])
    clip["apex"] = _read_only(clip_set.apexes[index])
    return clip


def _run(parsed: Sequence[OpSpec], clip: Clip, clip_id: str) -> Clip:
    """The ops applied in order to one clip; returns its streams, landmarks and metadata (as [1] arrays)."""
    for spec in parsed:
        metadata = {key: clip[key] for key in METADATA}
        try:
            out = spec.op.fn(clip, **spec.kwargs)
        except UserError as error:
            raise UserError(f"{CONFIG_KEY} entry '{spec}' on clip {clip_id!r}: {error}") from None
        if not isinstance(out, Mapping) or "frames" not in out or "landmarks" not in out:
            raise ValueError(f"clip op '{spec}' must return the clip's dict with 'frames' and 'landmarks', got "
                             f"{sorted(out) if isinstance(out, Mapping) else type(out).__name__}")
        clip = {**metadata, **out}
    landmarks = np.asarray(clip["landmarks"], np.float32)
    if landmarks.shape != (len(clip["frames"]), ibug68.NUM_LANDMARKS, 2):
        raise ValueError(f"after clip ops {[str(s) for s in parsed]} clip {clip_id!r} has landmarks of shape "
                         f"{landmarks.shape} for {len(clip['frames'])} frames")
    return {**{k: np.asarray(v) for k, v in clip.items() if k not in METADATA}, "landmarks": landmarks,
            "fps": np.asarray(clip["fps"], np.float32).reshape(1), "apex": np.asarray(clip["apex"], np.int32).reshape(1)}


def clip_ops_stamp(parsed: Sequence[OpSpec], source_digest: str) -> dict[str, Any]:
    """What the output of the ops depends on: the source clips, the canonical specs, every op's version."""
    return {"source": source_digest, "clip_ops": [str(spec) for spec in parsed],
            "versions": {spec.name: spec.op.version for spec in parsed}, "format": STORE_FORMAT}


def apply_clip_ops(clip_set: ClipSet, specs: str | Sequence[str], *, cache_dir: str | None = None,
                   source_digest: str | None = None,
                   progress: Progress = lambda iterable, **_: iterable) -> ClipSet:
    """Runs the clip operations ``specs`` on every clip of ``clip_set`` once.

    Args:
      clip_set: loaded clips (without variants: operations precede any cache of them).
      specs: op specs ``"name(key=value, ...)"``; none returns ``clip_set`` itself.
      cache_dir: a folder of its own for the result (``merjax.data.array_store``);
        a finished result there with an equal stamp is reused, anything else
        rebuilt. None keeps the result in memory only.
      source_digest: a digest of the clips as given (e.g. the prepared
        dataset's stamp and the load settings); default
        ``stamps.clip_set_digest(clip_set)``, which hashes every frame.
      progress: a tqdm-like wrapper for the loop over clips.

    Returns:
      A ClipSet with the ops' output streams (memory-mapped when cached) and
      landmarks, and the same labels, ids and metadata.

    Raises:
      UserError: on a bad spec, or an op's bad argument, naming the spec and the clip.
    """
    parsed = parse_clip_ops(specs)
    if not parsed:
        return clip_set
    if clip_set.variants:
        raise ValueError(f"clip ops run on loaded clips, before variants are made; {clip_set.name} already has "
                         f"variants of {sorted(clip_set.variants)}")
    key = stamp = None
    if cache_dir is not None:
        stamp = clip_ops_stamp(parsed, source_digest or stamps.clip_set_digest(clip_set))
        key = stamps.digest_value(stamp)
        stored = array_store.open(cache_dir, key)
        if stored is not None and len(stored.get("landmarks", ())) == len(clip_set):
            logging.info("clip ops %s: reusing %s", stamp["clip_ops"], cache_dir)
            return _with_output(clip_set, stored)
    writer = array_store.Writer(cache_dir, key)
    names = None
    description = "clip ops: " + " | ".join(str(spec) for spec in parsed)
    for index in progress(range(len(clip_set)), desc=description, leave=False):
        clip_id = str(clip_set.clip_ids[index])
        out = _run(parsed, _clip(clip_set, index), clip_id)
        if names is None:
            names = sorted(out)
        elif sorted(out) != names:
            raise ValueError(f"clip ops {[str(s) for s in parsed]} gave clip {clip_id!r} the streams {sorted(out)}, "
                             f"the first clip {names}; every clip must get the same streams")
        for name in names:
            writer.append(name, out[name])
    return _with_output(clip_set, writer.finish(stamp=stamp))


def _with_output(clip_set: ClipSet, stored: array_store.Arrays) -> ClipSet:
    streams = {name: arrays for name, arrays in stored.items() if name not in ("landmarks", *METADATA)}
    metadata = {key: np.concatenate([np.asarray(value) for value in stored[key]]) for key in METADATA}
    return dataclasses.replace(clip_set, streams=streams, landmarks=stored["landmarks"], variants={},
                               fps=metadata["fps"].astype(np.float32), apexes=metadata["apex"].astype(np.int32))
