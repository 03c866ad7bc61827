"""Files that survive a crash: atomic writes and JSON reads that name the file on failure.

A result written in place and cut short by a crash (power loss, a kill, a full
disk) leaves a truncated file that blocks every later run. Every file merjax
writes for reuse goes through ``atomic_write_*``: the content is written to a
temporary file in the same folder, flushed to disk and renamed over the target,
so a reader sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from merjax.errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any, indent: int | None = 1) -> None:
    """Writes ``value`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The JSON value in ``path``.

    Raises:
      UserError: naming ``path`` when it is missing, unreadable or not valid JSON
        (e.g. truncated by a crash), and saying what to do.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{what} {path} is not valid JSON ({error}); it was probably cut short by a crash: "
                        f"delete it (or rerun with --overwrite) and run again") from None
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror}") from None
