"""Finding a database's folders and files inside the user's ``manual_dir``.

Users unpack the licensed archives in different ways (``/data/SMIC/HS``,
``/data/SMIC/SMIC_all_cropped/HS``, ``Cropped-updated/Cropped``), so builders
search a few levels below ``manual_dir`` for the folder they need instead of
prescribing one path. When nothing fits, the error shows the expected layout
and what is actually there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

from merjax.errors import UserError

SEARCH_DEPTH = 3
LISTED_ENTRIES = 12


BUILD_FLAG = "--manual_dir"   # the manual_dir flag of ``python -m datasets.build``, named in the messages


class ManualDirError(UserError):
    """The manual_dir does not hold the database in a layout the builder understands.

    The first line of the message says what is wrong and what to pass; the
    lines below show the expected layout and what the folder holds.
    """

    def naming_flag(self, flag: str) -> ManualDirError:
        """The same error naming ``flag`` (e.g. ``--config.data.manual_dir`` of an experiment) instead of
        ``datasets.build``'s ``--manual_dir``, so that the advice fits the command the user ran."""
        return ManualDirError(re.sub(rf"{BUILD_FLAG}\b", flag, str(self)))


def walk_dirs(root: Path, max_depth: int = SEARCH_DEPTH) -> Iterator[Path]:
    """``root`` and the folders below it, breadth first (shallowest first, by name), to ``max_depth``."""
    level = [root]
    for _ in range(max_depth + 1):
        next_level = []
        for folder in level:
            yield folder
            next_level.extend(sorted(child for child in folder.iterdir() if child.is_dir()))
        level = next_level


def find_dir(root: Path, accept: Callable[[Path], bool], max_depth: int = SEARCH_DEPTH) -> Path | None:
    """The shallowest folder under ``root`` (``root`` included) that ``accept`` accepts, or None."""
    return next((folder for folder in walk_dirs(root, max_depth) if accept(folder)), None)


def find_files(root: Path, accept: Callable[[Path], bool], max_depth: int = SEARCH_DEPTH) -> list[Path]:
    """Files in the folders under ``root`` (to ``max_depth``) that ``accept`` accepts, sorted by path."""
    return sorted(path for folder in walk_dirs(root, max_depth) for path in folder.iterdir()
                  if path.is_file() and accept(path))


def listing(root: Path) -> str:
    """A short listing of ``root`` for error messages."""
    if not root.is_dir():
        return f"  ({root} does not exist)" if not root.exists() else f"  ({root} is a file)"
    entries = sorted(root.iterdir())
    if not entries:
        return f"  ({root} is empty)"
    lines = [f"  {entry.name}{'/' if entry.is_dir() else ''}" for entry in entries[:LISTED_ENTRIES]]
    if len(entries) > LISTED_ENTRIES:
        lines.append(f"  ... and {len(entries) - LISTED_ENTRIES} more")
    return "\n".join(lines)


def manual_dir_error(dataset: str, manual_dir: Path, problem: str, expected_layout: str) -> ManualDirError:
    """An error saying what is wrong with ``manual_dir``, the expected layout and what is there."""
    return ManualDirError(
        f"{dataset}: {problem}; pass {BUILD_FLAG}=ROOT, a folder laid out as below\nmanual_dir: {manual_dir}\n\n"
        f"Expected layout:\n{expected_layout.strip()}\n\nFound in {manual_dir}:\n{listing(manual_dir)}")
