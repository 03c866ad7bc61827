"""Readers for the annotation files of the licensed databases: CASME II, SAMM and the MEGC 2019 list.

The real files are untidy, and their layout changes between releases:

* ``CASME2-coding-20140508.xlsx`` and ``CASME2-coding-20190701.xlsx`` have a
  header in row 1 with two blank columns. The 2019 file adds
  ``Objective Classes`` (1..7) and two empty sheets. Subject is text
  (``'01'``), one apex is ``'/'``, and Action Units mix numbers and text.
* ``SAMM_Micro_FACS_Codes_v2.xlsx`` (sheet ``MICRO_ONLY``) has 13 rows of
  preamble before the header in row 14. The ``SAMM_20181215`` release has a
  single header row in which column 8 is called ``Type``, not ``Micro``. Two
  apexes lie outside onset..offset. Objective Classes are 1..7.
* The MEGC 2019 composite list is a headerless CSV with ``dataset,subject,clip,label``
  rows. Its subject ids are not the folder names on disk. The copy on the
  official website also has blank ``,,,`` rows between the data rows.

So the spreadsheet readers look for the header row and find each column by
its header name, not by position. They normalise subject ids to the folder
names on disk. Each quirk is recorded in a :class:`~datasets.core.quirks.QuirkLog`
under its kind; nothing is dropped silently. A file that cannot be read, or
that has no header, raises ``ValueError`` naming the file (and the row, column
or line). The readers return plain records, and the builders choose the labels.

Action Units are kept as written (a whole-number cell ``12`` becomes ``'12'``).
Objective classes (I..VII of Davison et al.) are read as 1..7 (``7``, ``7.0``,
``'7'``) or Roman ``'VII'`` and kept as the index 0..6. A sheet without the
column (CASME II 20140508) gives unknown (None); a blank cell is unknown and
counted (``objective_class_missing``); any other value raises ``UserError``
naming the file, sheet, row and column: guessing a class would put a wrong
target in the data.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import openpyxl
from openpyxl.utils import get_column_letter

from datasets.core.quirks import QuirkLog
from merjax.data import schema
from merjax.errors import UserError

HEADER_SCAN_ROWS = 30          # the header must lie within the first rows of a sheet (SAMM v2: row 14)
SAMM_SHEET = "MICRO_ONLY"      # tried first when a SAMM workbook has it
MEGC_DATASETS = ("smic", "casme2", "samm")
MEGC_LABELS = {0: "negative", 1: "positive", 2: "surprise"}

# Header names (normalised: lower case, no spaces/punctuation) that name each field.
_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "subject": ("subject",),
    "clip": ("filename",),
    "onset": ("onsetframe", "onset", "onsetf"),
    "apex": ("apexframe", "apex", "apexf"),
    "offset": ("offsetframe", "offset", "offsetf"),
    "action_units": ("actionunits", "aus", "au"),
    "emotion": ("estimatedemotion", "emotion"),
    "objective_class": ("objectiveclasses", "objectiveclass"),
}
_REQUIRED = ("subject", "clip", "onset", "apex", "offset", "action_units", "emotion")


@dataclasses.dataclass(frozen=True)
class CodedClip:
    """One data row of a coding spreadsheet, with the subject given as its folder name on disk.

    ``subject``: CASME II ``'sub01'``, SAMM ``'006'``. ``clip`` is the Filename
    cell, stripped, never validated. Frames are ``None`` when unknown.
    ``emotion`` is the sheet's word (stripped, case kept), and ``row`` is the
    1-based row in the sheet. ``action_units`` is the Action Units cell as
    text ('' when blank); ``objective_class`` the objective class as its index
    0..6 (the sheet's 1..7 minus 1), None when unknown.
    """

    subject: str
    clip: str
    onset: int
    apex: int | None
    offset: int
    emotion: str
    action_units: str
    objective_class: int | None
    row: int


@dataclasses.dataclass(frozen=True)
class ListedClip:
    """One row of the MEGC 2019 composite list, ids as the list writes them (see :func:`disk_names`)."""

    dataset: str
    subject: str
    clip: str
    label: int
    line: int


# ----------------------------------------------------------------------------------------------- cells


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_int(value: Any) -> int | None:
    """The cell as an int (``46``, ``46.0``, ``' 46 '``), or None if it is not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value.strip())
    return None


def _as_text(value: Any) -> str:
    """The cell as stripped text; a whole-number float loses its ``.0`` (Action Units ``12.0`` gives ``'12'``)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def objective_class_index(value: Any) -> int | None:
    """The index 0..6 of an objective class written ``1``..``7`` (also ``7.0``, ``' 7 '``) or ``'I'``..``'VII'``.

    None when ``value`` is none of these (the caller names the cell).
    """
    number = _as_int(value)
    if number is not None:
        return number - 1 if 1 <= number <= len(schema.OBJECTIVE_CLASSES) else None
    text = value.strip().upper() if isinstance(value, str) else None
    return schema.OBJECTIVE_CLASSES.index(text) if text in schema.OBJECTIVE_CLASSES else None


class _BadObjectiveClass(ValueError):
    """An Objective Classes cell that is neither blank nor a class (raised with the cell's place by the reader)."""


def _normalise_header(value: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(value).lower()) if value is not None else ""


def casme2_subject(value: Any) -> str | None:
    """CASME II folder name from a Subject cell: ``'01'``, ``1``, ``1.0`` or ``'sub01'`` give ``'sub01'``."""
    text = _as_text(value)
    number = _as_int(text[3:] if text.lower().startswith("sub") else text)
    return f"sub{number:02d}" if number is not None and number >= 0 else None


def samm_subject(value: Any) -> str | None:
    """SAMM folder name from a Subject cell: ``'006'``, ``6`` or ``6.0`` give ``'006'``."""
    number = _as_int(value)
    return f"{number:03d}" if number is not None and number >= 0 else None


# ----------------------------------------------------------------------------------------- workbooks


def _read_workbook(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The cell values of every sheet, in sheet order (the file is closed again)."""
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises zipfile, KeyError, InvalidFileException, OSError ...
        raise UserError(f"{path}: cannot read it as an .xlsx workbook ({type(error).__name__}: {error})") from error
    try:
        return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in workbook.worksheets}
    except Exception as error:
        raise UserError(f"{path}: the workbook is damaged ({type(error).__name__}: {error})") from error
    finally:
        workbook.close()


def _header_columns(row: Sequence[Any]) -> dict[str, int] | None:
    """Field -> 0-based column if ``row`` holds 'Subject' and 'Filename' (first match of each name wins)."""
    names = [_normalise_header(cell) for cell in row]
    columns: dict[str, int] = {}
    for field, aliases in _COLUMNS.items():
        for alias in aliases:
            if alias in names:
                columns[field] = names.index(alias)
                break
    return columns if "subject" in columns and "clip" in columns else None


def _find_table(path: Path, sheets: Mapping[str, list[tuple[Any, ...]]],
                preferred: str | None = None) -> tuple[str, int, dict[str, int]]:
    """(sheet, 0-based header row index, columns) of the first sheet with a header row; ``preferred`` is tried first."""
    order = sorted(sheets, key=lambda title: title != preferred)
    for title in order:
        for index, row in enumerate(sheets[title][:HEADER_SCAN_ROWS]):
            columns = _header_columns(row)
            if columns is None:
                continue
            missing = [field for field in _REQUIRED if field not in columns]
            if missing:
                wanted = "; ".join(f"{field} (one of {'/'.join(_COLUMNS[field])})" for field in missing)
                raise UserError(f"{path}: sheet {title!r} header row {index + 1} has no column for {wanted}, "
                                 "ignoring case, spaces and punctuation "
                                 f"(header: {[cell for cell in row if cell is not None]})")
            return title, index, columns
    raise UserError(f"{path}: no header row with 'Subject' and 'Filename' in the first {HEADER_SCAN_ROWS} "
                     f"rows of sheets {list(sheets)}")


def _data_rows(rows: list[tuple[Any, ...]], header_index: int) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(1-based row, cells) after the header, up to the last non-blank row (blank padding at the end is not data)."""
    last = len(rows)
    while last > header_index + 1 and all(_is_blank(cell) for cell in rows[last - 1]):
        last -= 1
    for index in range(header_index + 1, last):
        yield index + 1, rows[index]


# ------------------------------------------------------------------------------------------ rows


def _cell(cells: tuple[Any, ...], columns: Mapping[str, int], field: str) -> Any:
    column = columns.get(field)
    return cells[column] if column is not None and column < len(cells) else None


def _parse_row(cells: tuple[Any, ...], columns: Mapping[str, int], row: int, place: str,
               subject_of: Callable[[Any], str | None], quirks: QuirkLog) -> CodedClip | None:
    """The row as a CodedClip, or None (recorded in ``quirks``) when it is blank or unusable."""
    if all(_is_blank(cell) for cell in cells):
        quirks.fixed("blank_row", f"{place} row {row}", "empty row ignored")
        return None
    subject_cell, clip = _cell(cells, columns, "subject"), _as_text(_cell(cells, columns, "clip"))
    subject = subject_of(subject_cell)
    where = f"{place} row {row} ({subject or _as_text(subject_cell)}/{clip})"
    if subject is None or not clip:
        quirks.skipped("bad_row", where, f"no usable subject/filename: {[c for c in cells if not _is_blank(c)]}")
        return None
    onset, offset = _as_int(_cell(cells, columns, "onset")), _as_int(_cell(cells, columns, "offset"))
    if onset is None or offset is None or onset > offset:
        quirks.skipped("bad_row", where, f"onset {_cell(cells, columns, 'onset')!r}, "
                                         f"offset {_cell(cells, columns, 'offset')!r}")
        return None
    apex_cell = _cell(cells, columns, "apex")
    apex = _as_int(apex_cell)
    if apex is None:
        quirks.fixed("apex_missing", where, f"apex {apex_cell!r} kept as unknown")
    elif not onset <= apex <= offset:
        quirks.fixed("apex_outside", where, f"apex {apex} outside onset..offset {onset}..{offset}, kept as unknown")
        apex = None
    objective_cell = _cell(cells, columns, "objective_class")
    objective = None if _is_blank(objective_cell) else objective_class_index(objective_cell)
    if "objective_class" in columns and _is_blank(objective_cell):
        quirks.fixed("objective_class_missing", where, "blank objective class kept as unknown")
    elif objective is None and not _is_blank(objective_cell):
        raise _BadObjectiveClass(f"objective class {objective_cell!r} is not 1..7 (or I..VII); "
                                 "correct the cell, or clear it if the class is unknown")
    return CodedClip(subject=subject, clip=clip, onset=onset, apex=apex, offset=offset,
                     emotion=_as_text(_cell(cells, columns, "emotion")),
                     action_units=_as_text(_cell(cells, columns, "action_units")),
                     objective_class=objective, row=row)


def _read_coding(path: str | Path, quirks: QuirkLog, subject_of: Callable[[Any], str | None],
                 preferred_sheet: str | None = None) -> list[CodedClip]:
    path = Path(path)
    sheets = _read_workbook(path)
    title, header_index, columns = _find_table(path, sheets, preferred_sheet)
    place = path.name if len(sheets) == 1 or title == next(iter(sheets)) else f"{path.name}[{title}]"
    clips: list[CodedClip] = []
    seen: dict[tuple[str, str], int] = {}
    for row, cells in _data_rows(sheets[title], header_index):
        try:
            clip = _parse_row(cells, columns, row, place, subject_of, quirks)
        except _BadObjectiveClass as error:
            column = columns["objective_class"]
            raise UserError(f"{path}: sheet {title!r} row {row} column {get_column_letter(column + 1)} "
                            f"({sheets[title][header_index][column]}): {error}") from None
        if clip is None:
            continue
        key = (clip.subject, clip.clip)
        if key in seen:
            quirks.skipped("duplicate_row", f"{place} row {row} ({clip.subject}/{clip.clip})",
                           f"same subject and filename as row {seen[key]}")
            continue
        seen[key] = row
        clips.append(clip)
    return clips


def read_casme2_coding(path: str | Path, quirks: QuirkLog) -> list[CodedClip]:
    """The clips of a ``CASME2-coding-*.xlsx`` (20140508 or 20190701), subject as ``'sub01'``.

    The first sheet with a 'Subject'/'Filename' header row is used. Columns are
    found by name. Quirks (fixed: ``apex_missing``, ``apex_outside``,
    ``blank_row``, ``objective_class_missing``; skipped: ``bad_row``,
    ``duplicate_row``) are recorded in ``quirks``. The 20140508 release has no
    Objective Classes: every clip's is None.

    Raises:
      UserError: naming the file, sheet, row and column of an Objective Classes
        cell that is neither blank nor 1..7 / I..VII (and the file problems above).
    """
    return _read_coding(path, quirks, casme2_subject)


def read_samm_codes(path: str | Path, quirks: QuirkLog) -> list[CodedClip]:
    """The clips of ``SAMM_Micro_FACS_Codes_v2.xlsx`` (13-row preamble) or the single-header 20181215 release.

    The subject is given as ``'006'``. Sheet ``MICRO_ONLY`` is tried first.
    Quirks are recorded as in :func:`read_casme2_coding`; the free-text rows
    after the data are counted as ``bad_row``.
    """
    return _read_coding(path, quirks, samm_subject, SAMM_SHEET)


# --------------------------------------------------------------------------------------- MEGC list


def _parse_listed(fields: list[str], line: int, path: Path) -> ListedClip:
    if len(fields) != 4:
        raise UserError(f"{path} line {line}: expected 4 fields dataset,subject,clip,label, got {fields}")
    dataset, subject, clip, label_text = (field.strip() for field in fields)
    if dataset.lower() not in MEGC_DATASETS:
        raise UserError(f"{path} line {line}: unknown dataset {dataset!r} (expected one of {MEGC_DATASETS})")
    if not subject or not clip:
        raise UserError(f"{path} line {line}: empty subject or clip in {fields}")
    label = _as_int(label_text)
    if label not in MEGC_LABELS:
        raise UserError(f"{path} line {line}: label {label_text!r} is not one of {sorted(MEGC_LABELS)}")
    return ListedClip(dataset=dataset.lower(), subject=subject, clip=clip, label=label, line=line)


def read_megc_list(path: str | Path, quirks: QuirkLog | None = None) -> tuple[list[ListedClip], int]:
    """The clips of the MEGC 2019 composite list and the number of blank lines (``,,,``) skipped.

    Blank lines are also recorded as ``blank_row`` (fixed) in ``quirks`` if one
    is given. A malformed or repeated row raises ``ValueError`` naming the file
    and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the MEGC list ({type(error).__name__}: {error})") from error
    clips: list[ListedClip] = []
    blank = 0
    seen: dict[tuple[str, str, str], int] = {}
    for line, fields in enumerate(csv.reader(text.splitlines()), start=1):
        if all(not field.strip() for field in fields):
            blank += 1
            if quirks is not None:
                quirks.fixed("blank_row", f"{path.name} line {line}", "empty row ignored")
            continue
        clip = _parse_listed(fields, line, path)
        key = (clip.dataset, clip.subject, clip.clip)
        if key in seen:
            raise UserError(f"{path} line {line}: {','.join(key)} repeats line {seen[key]}")
        seen[key] = line
        clips.append(clip)
    return clips, blank


def disk_names(listed: ListedClip) -> tuple[str, str]:
    """(subject folder, clip folder) on disk for a list row.

    SMIC ``s01``/``s01_ne_01`` become ``s1``/``s1_ne_01`` (the SMIC-HS folders are
    unpadded). SAMM ``6``/``006_1_2`` becomes ``006``/``006_1_2``. CASME II ids are
    already folder names.
    """
    if listed.dataset == "smic":
        subject = re.fullmatch(r"[sS]0*(\d+)", listed.subject)
        clip = re.fullmatch(r"[sS]0*(\d+)(_.+)", listed.clip)
        if subject is None or clip is None:
            raise UserError(f"MEGC list line {listed.line}: SMIC ids {listed.subject!r}/{listed.clip!r} "
                             "are not s<N>/s<N>_<emotion>_<NN>")
        return f"s{int(subject.group(1))}", f"s{int(clip.group(1))}{clip.group(2)}"
    if listed.dataset == "samm":
        subject_folder = samm_subject(listed.subject)
        if subject_folder is None:
            raise UserError(f"MEGC list line {listed.line}: SAMM subject {listed.subject!r} is not a number")
        return subject_folder, listed.clip
    return listed.subject, listed.clip
