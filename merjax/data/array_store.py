"""Per-clip arrays computed once and kept on disk, reused only under an equal key.

Every cache merjax builds from a dataset's clips — a frozen prefix's features
(``merjax.train.prefix_cache``), the output of clip operations
(``merjax.data.clip_ops``) — is a *store*: named streams, each holding one
array per clip. On disk a store is a folder with one file per stream
(``<stream>.bin``: the clips' arrays back to back) and a key file
(``key.json``) that lists every array's offset, shape and dtype and holds the
store's *key*, a digest of everything the arrays depend on.

The key file is written last and atomically (``merjax.files``), after the
arrays are flushed to disk: a folder with a key file is a finished store; a
folder without one is an interrupted build, which is rebuilt. A reader reuses
a store only under an equal key (and, where it says so, the shapes and dtypes
it expects) and memory-maps it read-only, so a large store costs address space,
not memory, and a loader reads only the frames it uses. One file per stream
(rather than per clip) keeps one open file per stream: a memory map holds a
file descriptor, and thousands of clips times several streams would exceed the
usual limit of 1024.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from merjax import files, stamps
from merjax.errors import UserError

KEY_FILE = "key.json"
STREAM_SUFFIX = ".bin"
_ALIGNMENT = 64                      # bytes; every array starts at a multiple of it
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

Arrays = dict[str, list[np.ndarray]]   # stream name -> one array per clip


class ArraySpec(NamedTuple):
    """The shape and dtype of one stored array."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def of(cls, array: np.ndarray) -> "ArraySpec":
        return cls(tuple(int(n) for n in array.shape), np.dtype(array.dtype))

    @property
    def num_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def key(*parts: Any) -> str:
    """A SHA-256 digest of ``parts``: nested dicts/lists/tuples of arrays and JSON values.

    Arrays (numpy or jax) enter by dtype, shape and bytes, other leaves by their
    JSON encoding, and the nesting by its structure, so model variables, clip
    digests and settings can be hashed together.
    """
    hasher = hashlib.sha256()
    for part in parts:
        leaves, treedef = jax.tree.flatten(part)
        hasher.update(str(treedef).encode())
        for leaf in leaves:
            if isinstance(leaf, (np.ndarray, jax.Array)):
                stamps.update_with_array(hasher, leaf)
            else:
                stamps.update_with_value(hasher, leaf)
    return hasher.hexdigest()


def needs_disk(num_bytes: int, max_memory_bytes: int, directory: str | None, what: str) -> bool:
    """Whether a store of ``num_bytes`` goes to disk (it exceeds ``max_memory_bytes``).

    Raises:
      ValueError: when it does and there is no ``directory`` to put it in.
    """
    if num_bytes <= max_memory_bytes:
        return False
    if directory is None:
        raise ValueError(f"{what} needs {num_bytes / 2**30:.1f} GiB > {max_memory_bytes / 2**30:.1f} GiB of "
                         f"memory and no directory was given")
    return True


def _stream_path(directory: str, stream: str) -> str:
    return os.path.join(directory, stream + STREAM_SUFFIX)


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGNMENT) * _ALIGNMENT


def _views(buffer: np.ndarray, entries: Sequence[tuple[int, ArraySpec]]) -> list[np.ndarray]:
    """The arrays at (offset, spec) in a uint8 buffer, as views of it."""
    return [buffer[offset:offset + spec.num_bytes].view(spec.dtype).reshape(spec.shape)
            for offset, spec in entries]


def open(directory: str, key: str,   # noqa: A001 - the store's verb; the builtin is not used here
         expected: Mapping[str, Sequence[ArraySpec]] | None = None) -> Arrays | None:
    """The arrays of the finished store in ``directory``, memory-mapped read-only, if its key is ``key``.

    Args:
      directory: the store's folder.
      key: the key the store must have been written with.
      expected: optionally, per stream the shape and dtype of every clip's
        array; the store is reused only if it holds exactly these.

    Returns:
      ``{stream: [array per clip]}``, or None when there is no finished store
      with this key and these arrays (no folder, no key file — an interrupted
      build —, another key, other shapes, a missing or short stream file).
    """
    try:
        recorded = files.read_json(os.path.join(directory, KEY_FILE), "array store key file")
        if recorded["key"] != key:
            return None
        layout = {stream: [(int(offset), ArraySpec(tuple(shape), np.dtype(dtype)))
                           for offset, shape, dtype in entries]
                  for stream, entries in recorded["streams"].items()}
    except (UserError, KeyError, TypeError, ValueError):
        return None
    if expected is not None:
        if set(expected) != set(layout):
            return None
        for stream, specs in expected.items():
            found = [spec for _, spec in layout[stream]]
            if found != [ArraySpec(tuple(shape), np.dtype(dtype)) for shape, dtype in specs]:
                return None
    arrays: Arrays = {}
    for stream, entries in layout.items():
        path = _stream_path(directory, stream)
        end = max((offset + spec.num_bytes for offset, spec in entries), default=0)
        try:
            if os.path.getsize(path) < end:
                return None
            buffer = np.memmap(path, np.uint8, mode="r") if end else np.zeros(0, np.uint8)
        except (OSError, ValueError):
            return None
        arrays[stream] = _views(buffer, entries)
    return arrays


class Writer:
    """Builds a store: in memory (``directory=None``) or in a folder, finished by ``finish``.

    A stream's arrays are either allocated all at once (``allocate``: writable
    arrays filled by the caller in any order) or appended one clip at a time
    (``append``: for arrays whose shapes are known only once computed). On disk,
    creating a Writer first removes the folder's key file, so that a build cut
    short is never mistaken for a finished store; stream files are written
    beside the old ones (``.partial``) and renamed over them by ``finish``, so
    arrays still mapped from an earlier store keep their bytes. The folder
    belongs to the store: ``finish`` deletes stream files of earlier stores.
    """

    def __init__(self, directory: str | None, key: str | None = None):
        if directory is not None and key is None:
            raise ValueError("a store on disk needs a key")
        self._directory = directory
        self._key = key
        self._layout: dict[str, list[tuple[int, ArraySpec]]] = {}
        self._arrays: Arrays = {}
        self._buffers: dict[str, np.memmap] = {}
        self._appending: dict[str, Any] = {}     # open files of the appended streams on disk
        self._allocated: set[str] = set()
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            key_file = os.path.join(directory, KEY_FILE)
            if os.path.exists(key_file):
                os.remove(key_file)

    @property
    def on_disk(self) -> bool:
        return self._directory is not None

    def _partial_path(self, stream: str) -> str:
        return _stream_path(self._directory, stream) + ".partial"

    def _new_stream(self, stream: str) -> None:
        if not _STREAM_NAME.match(stream):
            raise ValueError(f"stream name {stream!r} must be letters, digits, '_', '.' or '-' (it names a file)")
        if stream in self._layout:
            raise ValueError(f"stream {stream!r} is already in this store")
        self._layout[stream] = []
        self._arrays[stream] = []

    def allocate(self, stream: str, specs: Sequence[ArraySpec]) -> list[np.ndarray]:
        """Writable zeroed arrays of ``stream``, one per clip with these shapes and dtypes, to fill in place."""
        self._new_stream(stream)
        self._allocated.add(stream)
        specs = [ArraySpec(tuple(int(n) for n in shape), np.dtype(dtype)) for shape, dtype in specs]
        offset = 0
        for spec in specs:
            self._layout[stream].append((offset, spec))
            offset = _aligned(offset + spec.num_bytes)
        if self.on_disk and offset:
            buffer = np.memmap(self._partial_path(stream), np.uint8, mode="w+", shape=(offset,))
            self._buffers[stream] = buffer
            arrays = _views(buffer, self._layout[stream])
        else:
            arrays = [np.zeros(spec.shape, spec.dtype) for spec in specs]
        self._arrays[stream] = arrays
        return arrays

    def append(self, stream: str, array: np.ndarray) -> None:
        """Adds the next clip's array of ``stream`` (clips in order; the first call creates the stream)."""
        if stream not in self._layout:
            self._new_stream(stream)
            if self.on_disk:
                self._appending[stream] = builtins.open(self._partial_path(stream), "wb")
        elif stream in self._allocated:
            raise ValueError(f"stream {stream!r} was allocated; fill its arrays instead of appending")
        array = np.ascontiguousarray(array)
        spec = ArraySpec.of(array)
        if not self.on_disk:
            self._layout[stream].append((0, spec))
            self._arrays[stream].append(array)
            return
        handle = self._appending[stream]
        offset = _aligned(handle.tell())
        handle.write(b"\0" * (offset - handle.tell()))
        handle.write(memoryview(array).cast("B"))
        self._layout[stream].append((offset, spec))

    def finish(self, **info: Any) -> Arrays:
        """Ends the build and returns ``{stream: [array per clip]}``.

        On disk the arrays are flushed, then the key file is written (with
        ``info``, JSON values kept for whoever reads the folder), stream files
        of earlier stores are deleted, and the stored arrays are returned
        memory-mapped read-only.
        """
        counts = {stream: len(entries) for stream, entries in self._layout.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(f"the streams of a store must hold the same number of clips, got {counts}")
        if not self.on_disk:
            return self._arrays
        for buffer in self._buffers.values():
            buffer.flush()
        for handle in self._appending.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._buffers.clear()
        self._appending.clear()
        for stream in self._layout:
            if os.path.exists(self._partial_path(stream)):
                os.replace(self._partial_path(stream), _stream_path(self._directory, stream))
        streams = {stream: [[offset, list(spec.shape), spec.dtype.str] for offset, spec in entries]
                   for stream, entries in self._layout.items()}
        files.atomic_write_json(os.path.join(self._directory, KEY_FILE),
                                {"key": self._key, "streams": streams, "info": info}, indent=None)
        for name in os.listdir(self._directory):
            stale_stream = name.endswith(STREAM_SUFFIX) and name[:-len(STREAM_SUFFIX)] not in self._layout
            if stale_stream or name.endswith(STREAM_SUFFIX + ".partial"):
                os.remove(os.path.join(self._directory, name))
        stored = open(self._directory, self._key)
        if stored is None:
            raise OSError(f"the array store just written to {self._directory} cannot be read back")
        return stored
