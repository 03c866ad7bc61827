"""Writers of fake annotation spreadsheets that follow the real releases' layouts, for tests.

``write_casme2_coding`` follows ``CASME2-coding-20140508.xlsx`` /
``CASME2-coding-20190701.xlsx``, and ``write_samm_codes`` follows
``SAMM_Micro_FACS_Codes_v2.xlsx`` / ``SAMM_20181215_Micro_FACS_Codes_v2.xlsx``.
The details are those of the real files: the exact headers, the blank columns
(with a None header), Subject written as text, Action Units that mix numbers and
text, the empty extra sheets, SAMM's 13-row preamble, and ``Type`` in place of
``Micro``, all as seen in public copies of the real files.

In ``rows``, each item is a :class:`CasmeRow` / :class:`SammRow`, ``None`` for a
blank row, or a tuple of raw cell values written as given (free text, bad rows).

    write_casme2_coding(root / "CASME2-coding-20190701.xlsx",
                        [CasmeRow("01", "EP02_01f", 46, 59, 86, "happiness", "12")])
    write_samm_codes(root / "SAMM_Micro_FACS_Codes_v2.xlsx",
                     [SammRow("006", "006_1_2", 5562, 5588, 5632, "Anger", "4+7")])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import openpyxl

CASME2_HEADER_2014 = ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                      "Action Units", "Estimated Emotion")
CASME2_HEADER_2019 = CASME2_HEADER_2014 + ("Objective Classes",)
SAMM_HEADER_V2 = ("Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
                  "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes")
SAMM_HEADER_20181215 = SAMM_HEADER_V2[:7] + ("Type",) + SAMM_HEADER_V2[8:]
SAMM_MICRO = "Micro - 1/2"

# Rows 1-13 of the real v2 sheet: (column, text) per row; None is an empty row.
SAMM_PREAMBLE: tuple[tuple[tuple[int, str], ...] | None, ...] = (
    ((1, "SAMM Dataset - Master FACS Codes"),
     (5, ("(Note to the users: If you're using SAMM, please cite: Davison, A. K., Lansley, C., Costen, N., Tan, "
          "K., & Yap, M. H. (2016). SAMM: A spontaneous micro-facial movement dataset. IEEE Transactions on "
          "Affective Computing.)"))),
    None,
    ((1, "9/9/17 - New updates with Emotional and Objective Classes. For details please refer to: "),
     (9, "arXiv preprint arXiv:1708.07549.")),
    ((5, ("(Note to the users: if you're using the emotional or objective classes, please cite: Davison, A. "
          "K., Merghani, W., & Yap, M. H. (2017). Objective Classes for Micro-Facial Expression Recognition. "
          "arXiv preprint arXiv:1708.07549.)")),),
    None,
    ((1, "Symbol Key:"),),
    ((1, '"/" = or'),),
    ((1, '"?" = some AU\'s continue for a while and have unclear offset'),),
    None,
    ((1, "AU Help:"),),
    ((1, '"L2 or R2" = Unilateral AU 2 on left side of face / right side of face'),),
    ((1, '"A2" = Asymmetric AU 2. Occurs on both sides of face but stronger on one side'),),
    None,
)


@dataclasses.dataclass(frozen=True)
class CodedRow:
    """The fields a CASME II and a SAMM coding row share, as the sheet holds them.

    Pass the subject as text (like the real files: ``'01'``, ``'006'``) or as an int,
    and ``apex='/'`` for a missing apex.
    """

    subject: str | int
    clip: str
    onset: int | str | None
    apex: int | str | None
    offset: int | str | None
    emotion: str
    action_units: str | int = "4"
    objective_class: int | None = 7


@dataclasses.dataclass(frozen=True)
class CasmeRow(CodedRow):
    """One CASME II coding row."""

    @property
    def subject_folder(self) -> str:
        """The folder name on disk: ``'sub01'``."""
        return f"sub{int(self.subject):02d}"


@dataclasses.dataclass(frozen=True)
class SammRow(CodedRow):
    """One SAMM coding row; SAMM's sheet also has a Notes column."""

    notes: str | None = None

    @property
    def subject_folder(self) -> str:
        """The folder name on disk: ``'006'``."""
        return f"{int(self.subject):03d}"


Row = CasmeRow | SammRow | Sequence[Any] | None


def _action_units_cell(units: str | int) -> str | int:
    """Whole-number AUs are numbers in the real sheets (``12``), and the rest are text (``'4+7+L10'``)."""
    return int(units) if isinstance(units, str) and units.isdigit() else units


def _casme_cells(row: CasmeRow, release: str) -> list[Any]:
    cells = [row.subject, row.clip, None, row.onset, row.apex, row.offset, None,
             _action_units_cell(row.action_units), row.emotion]
    return cells + [row.objective_class] if release == "20190701" else cells


def _samm_cells(row: SammRow) -> list[Any]:
    parts = row.clip.split("_")
    inducement = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    duration = (row.offset - row.onset + 1
                if isinstance(row.onset, int) and isinstance(row.offset, int) else None)
    return [row.subject, row.clip, inducement, row.onset, row.apex, row.offset, duration, SAMM_MICRO,
            _action_units_cell(row.action_units), row.emotion, row.objective_class, row.notes]


def _append_rows(sheet: Any, rows: Sequence[Row], cells_of: Any) -> None:
    for row in rows:
        if row is None:
            sheet.append([])
        elif isinstance(row, (CasmeRow, SammRow)):
            sheet.append(cells_of(row))
        else:
            sheet.append(list(row))


def write_casme2_coding(path: str | Path, rows: Sequence[Row], release: str = "20190701") -> Path:
    """Writes a ``CASME2-coding-<release>.xlsx`` (``'20190701'`` or ``'20140508'``) with ``rows`` under the header."""
    if release not in ("20190701", "20140508"):
        raise ValueError(f"unknown CASME II coding release {release!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(list(CASME2_HEADER_2019 if release == "20190701" else CASME2_HEADER_2014))
    _append_rows(sheet, rows, lambda row: _casme_cells(row, release))
    if release == "20190701":
        workbook.create_sheet("Sheet2")
        workbook.create_sheet("Sheet3")
    workbook.save(path)
    return path


def write_samm_codes(path: str | Path, rows: Sequence[Row], release: str = "v2") -> Path:
    """Writes a SAMM FACS-codes workbook: ``'v2'`` (sheet ``MICRO_ONLY``, preamble, header in row 14) or
    ``'20181215'`` (a single header in row 1 with ``Type`` as column 8, on a sheet named ``Sheet1``)."""
    if release not in ("v2", "20181215"):
        raise ValueError(f"unknown SAMM codes release {release!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    if release == "v2":
        sheet.title = "MICRO_ONLY"
        for number, texts in enumerate(SAMM_PREAMBLE, start=1):
            for column, text in texts or ():
                sheet.cell(row=number, column=column, value=text)
        for column, name in enumerate(SAMM_HEADER_V2, start=1):
            sheet.cell(row=len(SAMM_PREAMBLE) + 1, column=column, value=name)
    else:
        sheet.title = "Sheet1"
        sheet.append(list(SAMM_HEADER_20181215))
    _append_rows(sheet, rows, _samm_cells)
    workbook.save(path)
    return path
