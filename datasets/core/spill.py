"""TFDS's shuffle buffer spilled to plain local files, without TensorFlow, past a memory limit merjax sets.

TFDS's ``Writer`` hands every serialized example to a ``shuffle.Shuffler``.
In tensorflow-datasets 4.9.10 the shuffler keeps the examples in memory until
their bytes pass ``shuffle.MAX_MEM_BUFFER_SIZE`` (1 GB); then it moves them,
and every later one, into 1,000 ``shuffle._Bucket`` files by their key hash
(bucket ``i`` holds the ``i``-th of 1,000 equal hash ranges), and writes the
shards by reading the buckets back one at a time, each sorted by hash. Its
buckets read and write through ``tf.io.gfile``, so without TensorFlow a build
stopped with ``ModuleNotFoundError`` once it passed 1 GB (CASME II at crop 224
after 163 of its 255 clips).

``tf_free_spill`` replaces, while active, the bucket class with ``LocalBucket``
(plain files, opened for each record, so no 1,000 open files) and the limit
with ``MEMORY_LIMIT_BYTES``. The order written does not depend on either: in
memory all examples are sorted by hash; spilled, the buckets cover increasing
hash ranges and each is sorted. So a spilled build writes the same bytes as an
in-memory one, and the build's memory stays at the limit plus one bucket
(about 1/1000 of the data) however large the dataset. The spill files need
as much free disk, next to the dataset being written, as the data itself.

On entering, a one-record shuffler past a zero limit must spill it to a file
and give it back; a tensorflow-datasets whose shuffler does not (it ignores the
limit, spills through TensorFlow, lacks these names) is refused with one
``UserError`` before anything is built.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle

from merjax.errors import UserError

# Serialized examples held in memory before the shuffler spills them all to disk. TFDS's own
# default is 1 GB; a quarter of it keeps a build's peak memory lower, and the spill (one more
# sequential write and read of the data) costs little next to a build's zlib encoding.
MEMORY_LIMIT_BYTES = 256 << 20

KEY_BYTES = 16    # TFDS's hash keys are 128-bit
SIZE_BYTES = 8
SUPPORTED_TFDS = "tensorflow-datasets>=4.9.10,<4.10"
_PROBE_RECORD = b"merjax spill check"


class LocalBucket:
    """One of the shuffler's buckets as a local file of records: key (16 bytes), size (8), the bytes.

    Same interface as TFDS 4.9.10's ``shuffle._Bucket``, which the shuffler
    builds with the bucket's path, fills with ``add``, and reads once with
    ``read_values`` before ``del_file``.
    """

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = os.fspath(path)
        self.size = 0      # bytes of the records' data
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def add(self, key: int, data: bytes) -> None:
        """Appends one record (opens the file for it: the shuffler spreads records over 1,000 buckets)."""
        with open(self.path, "ab") as file:
            file.write(key.to_bytes(KEY_BYTES, "big") + len(data).to_bytes(SIZE_BYTES, "big"))
            file.write(data)
        self._length += 1
        self.size += len(data)

    def flush(self) -> None:
        """Nothing to flush: no file stays open between records."""

    def read_values(self) -> Iterator[tuple[int, bytes]]:
        """Yields the (key, data) records in the order added; none if nothing was added."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as file:
            while header := file.read(KEY_BYTES + SIZE_BYTES):
                size = int.from_bytes(header[KEY_BYTES:], "big")
                data = file.read(size)
                if len(header) != KEY_BYTES + SIZE_BYTES or len(data) != size:
                    raise OSError(f"spill file {self.path} is truncated (a record of {size} bytes ends early); "
                                  f"check the free disk space and rebuild")
                yield int.from_bytes(header[:KEY_BYTES], "big"), data

    def del_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


def _unsupported(reason: str) -> UserError:
    return UserError(f"tensorflow-datasets {tfds.__version__} {reason}, so merjax cannot build datasets larger "
                     f"than memory without TensorFlow; install {SUPPORTED_TFDS}")


def _check_spill_round_trip() -> None:
    """Raises UserError unless a shuffler past a zero limit spills a record to a file and gives it back."""
    limit = shuffle.MAX_MEM_BUFFER_SIZE
    shuffle.MAX_MEM_BUFFER_SIZE = 0
    try:
        with tempfile.TemporaryDirectory(prefix="merjax_spill_check_") as folder:
            shuffler = shuffle.Shuffler(folder, hash_salt="merjax")
            shuffler.add(b"probe", _PROBE_RECORD)
            spilled = bool(os.listdir(folder))
            read_back = [data for _, data in shuffler]
    except Exception as error:  # noqa: BLE001 (any failure means the internals changed)
        raise _unsupported(f"fails to spill its shuffle buffer through shuffle._Bucket "
                           f"({type(error).__name__}: {error})") from error
    finally:
        shuffle.MAX_MEM_BUFFER_SIZE = limit
    if not spilled:
        raise _unsupported("no longer spills its shuffle buffer through shuffle._Bucket past "
                           "shuffle.MAX_MEM_BUFFER_SIZE")
    if read_back != [_PROBE_RECORD]:
        raise _unsupported(f"reads back {len(read_back)} record(s) instead of the one spilled")


@contextlib.contextmanager
def tf_free_spill() -> Iterator[None]:
    """While active, TFDS shufflers spill past ``MEMORY_LIMIT_BYTES`` into ``LocalBucket`` files.

    Raises:
      UserError: the installed tensorflow-datasets shuffles otherwise than
        4.9.10 (checked on entry, before anything is built).
    """
    if not isinstance(getattr(shuffle, "MAX_MEM_BUFFER_SIZE", None), int) or not hasattr(shuffle, "_Bucket"):
        raise _unsupported("has no shuffle.MAX_MEM_BUFFER_SIZE or shuffle._Bucket")
    saved = shuffle._Bucket, shuffle.MAX_MEM_BUFFER_SIZE
    shuffle._Bucket = LocalBucket
    try:
        _check_spill_round_trip()
        shuffle.MAX_MEM_BUFFER_SIZE = MEMORY_LIMIT_BYTES
        yield
    finally:
        shuffle._Bucket, shuffle.MAX_MEM_BUFFER_SIZE = saved
