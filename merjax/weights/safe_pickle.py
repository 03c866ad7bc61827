"""Reads a pickle of numpy arrays without running code or handing numpy unchecked bytes.

The VGGFace2 weights are published as pickles (Python 2, protocol 2) of numpy
arrays. ``pickle.load`` would import and call whatever the file names, and even
numpy's own ``_reconstruct``/``__setstate__`` can crash the interpreter on
corrupted state. Here the few globals such a file may name are replaced by
stand-ins that only record their arguments; after the stream is read, every
array is rebuilt with ``np.frombuffer`` from a checked dtype (plain numbers and
booleans only), a checked shape and a buffer of exactly the right length.
Anything else is refused with an error naming the file and, for refused
globals, the global.
"""

from __future__ import annotations

import codecs
import collections
import pickle
from os import PathLike
from typing import Any

import numpy as np

_NUMERIC_KINDS = frozenset("biufc")
_BYTE_ORDERS = frozenset("<>|=")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that a file of arrays never needs: refused, nothing run."""


class CorruptPickle(ValueError):
    """The pickle's array records are inconsistent (bad dtype, shape or buffer length)."""


class _NDArrayType:
    """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


class _DType:
    """Stands for ``numpy.dtype(spec, align, copy)`` and its ``__setstate__``."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True):
        if not isinstance(spec, str):
            raise CorruptPickle(f"dtype spec must be a string, got {type(spec).__name__}")
        self.spec, self.byte_order = spec, "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in _BYTE_ORDERS:
            raise CorruptPickle(f"bad dtype state {state!r:.80}")
        self.byte_order = state[1]

    def build(self) -> np.dtype:
        try:
            dtype = np.dtype(self.spec)
        except TypeError as error:
            raise CorruptPickle(f"unknown dtype {self.spec!r:.40}") from error
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise CorruptPickle(f"dtype {self.spec!r} is not a plain number type")
        return dtype.newbyteorder(self.byte_order) if self.byte_order in "<>" else dtype


def _as_bytes(raw: Any) -> bytes:
    if isinstance(raw, str):          # Python 2 str, decoded as latin1 by the unpickler
        return raw.encode("latin1")
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    raise CorruptPickle(f"array data must be bytes, got {type(raw).__name__}")


def _from_buffer(raw: Any, dtype: Any, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise CorruptPickle("array record without a dtype")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise CorruptPickle(f"bad array shape {shape!r:.80}")
    numpy_dtype = dtype.build()
    data = _as_bytes(raw)
    expected = int(np.prod(shape, dtype=np.int64)) * numpy_dtype.itemsize
    if len(data) != expected:
        raise CorruptPickle(f"array of shape {shape} and dtype {numpy_dtype} needs {expected} bytes, "
                            f"the file holds {len(data)}")
    array = np.frombuffer(data, numpy_dtype).reshape(shape, order="F" if fortran else "C")
    return array.astype(numpy_dtype.newbyteorder("="), copy=True)


class _Array:
    """Stands for ``_reconstruct(ndarray, (0,), b'b')`` until ``__setstate__`` gives its data."""

    def __init__(self, cls: Any, shape: Any = (0,), typecode: Any = b"b"):
        if cls is not _NDArrayType:
            raise CorruptPickle("_reconstruct of something other than numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5 or not isinstance(state[1], tuple):
            raise CorruptPickle(f"bad array state {state!r:.80}")
        _, shape, dtype, fortran, raw = state
        self.array = _from_buffer(raw, dtype, shape, bool(fortran))


def _scalar(dtype: Any, raw: Any) -> np.generic:
    return _from_buffer(raw, dtype, (), False)[()]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy._core.numeric._frombuffer``: how protocol 5 writes contiguous arrays."""
    if not isinstance(shape, tuple) or order not in ("C", "F"):
        raise CorruptPickle(f"bad array record shape={shape!r:.40} order={order!r:.10}")
    return _from_buffer(buffer, dtype, shape, order == "F")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how Python 3 writes an empty buffer under protocol 2."""
    if args:
        raise CorruptPickle("bytes(...) is accepted only without arguments")
    return b""


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 writes numpy's raw bytes (latin1 only)."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") != "latin1":
        raise CorruptPickle("_codecs.encode is accepted only for latin1 text")
    return codecs.encode(text, "latin1")


_STAND_INS = {
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _encode,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: str):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _STAND_INS:
            raise RefusedGlobal(f"{self._path}: refusing to load {module}.{name}; a weight pickle may hold "
                                f"only numpy arrays and plain containers")
        return _STAND_INS[module, name]


def _materialise(value: Any) -> Any:
    """Replaces the array stand-ins of a loaded tree by the arrays they describe."""
    if isinstance(value, _Array):
        if value.array is None:
            raise CorruptPickle("an array record has no data")
        return value.array
    if isinstance(value, (_DType, _NDArrayType)) or value is _NDArrayType:
        raise CorruptPickle("a dtype or type object outside an array record")
    if isinstance(value, dict):
        return type(value)((key, _materialise(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(item) for item in value)
    return value


# What truncated or corrupted pickle bytes raise inside the unpickler itself.
_STREAM_ERRORS = (EOFError, pickle.UnpicklingError, ValueError, TypeError, LookupError, AttributeError,
                  OverflowError, MemoryError, RecursionError)


def load_arrays_pickle(path: str | PathLike[str]) -> Any:
    """Loads a pickle that may hold only numpy arrays (and numbers) in dicts, lists and tuples.

    Raises:
      RefusedGlobal (a ``pickle.UnpicklingError``): the file names any other global;
        nothing of it is run.
      ValueError: the file is truncated or corrupt (the message names it).
    """
    with open(path, "rb") as f:
        try:
            return _materialise(_Unpickler(f, str(path)).load())
        except RefusedGlobal:
            raise
        except _STREAM_ERRORS as error:
            raise ValueError(f"{path}: truncated or corrupt weight pickle ({type(error).__name__}: {error})") \
                from error
