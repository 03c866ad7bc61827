"""Tests of the annotation readers (datasets/core/sheets.py), run on fake sheets in the real layouts."""

from __future__ import annotations

import collections
from pathlib import Path

import openpyxl
import pytest

from datasets.core.quirks import QuirkLog
from merjax.errors import UserError
from datasets.core.sheets import (CodedClip, ListedClip, disk_names, objective_class_index, read_casme2_coding,
                                  read_megc_list, read_samm_codes)
from tests.fake_sheets import CasmeRow, SammRow, write_casme2_coding, write_samm_codes

MEGC_LIST = Path(__file__).resolve().parents[1] / "datasets" / "megc2019" / "megc2019_composite_3class.csv"   # the official list

CASME_ROWS = [
    CasmeRow("01", "EP02_01f", 46, 59, 86, "happiness", "12", 1),
    CasmeRow("01", "EP19_05f", 396, 416, 446, "disgust", "4+7+L10", 4),
    CasmeRow("07", "EP06_02_01", 11, 20, 31, "others", "L10", 7),
    CasmeRow("09", "EP09f", 5, 9, 40, "repression", 15, 5),
    CasmeRow("26", "EP01_2", 100, 150, 200, "surprise", "1+2", 6),
]
SAMM_ROWS = [
    SammRow("006", "006_1_2", 5562, 5588, 5632, "Anger", "4+7", 3),
    SammRow("006", "006_1_3", 3912, 3948, 3988, "Anger", "4", 3, notes="While blinking"),
    SammRow("025", "025_2_1", 700, 720, 760, "Other", "(R6 or R12)+R15", 7),
    SammRow("037", "037_4_1", 1488, 1529, 1577, "Other", 24, 7),
]


def _expected(row: CasmeRow | SammRow, number: int, objective: bool = True) -> CodedClip:
    """The record of ``row``: the sheet's objective class 1..7 as the index 0..6 (None without the column)."""
    return CodedClip(subject=row.subject_folder, clip=row.clip, onset=row.onset, apex=row.apex, offset=row.offset,
                     emotion=row.emotion, action_units=str(row.action_units),
                     objective_class=row.objective_class - 1 if objective else None, row=number)


# ------------------------------------------------------------------------------------------ round trips


def test_casme2_20190701_round_trip(tmp_path):
    path = write_casme2_coding(tmp_path / "CASME2-coding-20190701.xlsx", CASME_ROWS)
    workbook = openpyxl.load_workbook(path, read_only=True)
    assert workbook.sheetnames == ["Sheet1", "Sheet2", "Sheet3"]
    header, first = list(workbook["Sheet1"].iter_rows(max_row=2, values_only=True))
    workbook.close()
    assert header == ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                      "Action Units", "Estimated Emotion", "Objective Classes")
    assert first[0] == "01" and first[7] == 12          # text subject, numeric AU, as in the real file
    quirks = QuirkLog()
    clips = read_casme2_coding(path, quirks)
    assert clips == [_expected(row, number) for number, row in enumerate(CASME_ROWS, start=2)]
    assert [(clip.action_units, clip.objective_class) for clip in clips] == [
        ("12", 0), ("4+7+L10", 3), ("L10", 6), ("15", 4), ("1+2", 5)]
    assert quirks.kinds() == {}


def test_casme2_20140508_round_trip(tmp_path):
    path = write_casme2_coding(tmp_path / "CASME2-coding-20140508.xlsx", CASME_ROWS, release="20140508")
    quirks = QuirkLog()
    clips = read_casme2_coding(path, quirks)
    assert clips == [_expected(row, number, objective=False) for number, row in enumerate(CASME_ROWS, start=2)]
    assert quirks.kinds() == {}


def test_samm_v2_round_trip(tmp_path):
    path = write_samm_codes(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", SAMM_ROWS)
    workbook = openpyxl.load_workbook(path, read_only=True)
    assert workbook.sheetnames == ["MICRO_ONLY"]
    rows = list(workbook["MICRO_ONLY"].iter_rows(values_only=True))
    workbook.close()
    assert rows[0][0] == "SAMM Dataset - Master FACS Codes" and rows[5][0] == "Symbol Key:"
    assert rows[13][:8] == ("Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
                            "Duration", "Micro")
    assert rows[14][:8] == ("006", "006_1_2", 1, 5562, 5588, 5632, 71, "Micro - 1/2")
    quirks = QuirkLog()
    clips = read_samm_codes(path, quirks)
    assert clips == [_expected(row, number) for number, row in enumerate(SAMM_ROWS, start=15)]
    assert [(clip.action_units, clip.objective_class) for clip in clips] == [
        ("4+7", 2), ("4", 2), ("(R6 or R12)+R15", 6), ("24", 6)]
    assert quirks.kinds() == {}


def test_samm_20181215_single_header_round_trip(tmp_path):
    path = write_samm_codes(tmp_path / "SAMM_20181215_Micro_FACS_Codes_v2.xlsx", SAMM_ROWS, release="20181215")
    workbook = openpyxl.load_workbook(path, read_only=True)
    header = next(workbook.active.iter_rows(max_row=1, values_only=True))
    workbook.close()
    assert header[0] == "Subject" and header[7] == "Type"
    quirks = QuirkLog()
    clips = read_samm_codes(path, quirks)
    assert clips == [_expected(row, number) for number, row in enumerate(SAMM_ROWS, start=2)]
    assert quirks.kinds() == {}


def test_columns_found_by_name_not_position(tmp_path):
    path = tmp_path / "reordered.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["a title row"])
    sheet.append(["Estimated Emotion", "Extra", "Filename", "Subject", "Offset Frame", "Apex Frame", "Onset Frame",
                  "Action Units"])
    sheet.append(["fear", "x", "EP01_01", 3, 30, 20, 10, "4+5"])
    workbook.save(path)
    assert read_casme2_coding(path, QuirkLog()) == [
        CodedClip("sub03", "EP01_01", 10, 20, 30, "fear", "4+5", None, 3)]


# ------------------------------------------------------------------------------------------ quirks


def test_casme2_quirks_counted(tmp_path):
    rows = [
        CasmeRow("04", "EP12_01f", 21, "/", 61, "disgust"),            # row 2: apex '/'
        CasmeRow("04", "EP13_01", 21, None, 61, "disgust"),            # row 3: apex empty
        CasmeRow("05", "EP09_05f", 69, 69, 123, "disgust"),            # row 4: apex == onset, valid
        CasmeRow("05", "EP16_04f", 10, 50, 50, "happiness"),           # row 5: apex == offset, valid
        None,                                                          # row 6: blank
        CasmeRow("06", "EP01_01", 10, 60, 50, "others"),               # row 7: apex > offset
        CasmeRow("06", "EP01_02", 10, 5, 50, "others"),                # row 8: apex < onset
        None,                                                          # row 9: blank
        CasmeRow("07", "EP01_03", "x", 20, 50, "others"),              # row 10: text onset
        CasmeRow("07", "EP01_04", 60, 55, 50, "others"),               # row 11: onset > offset
        CasmeRow("07", "", 10, 20, 50, "others"),                      # row 12: no filename
        (None, "EP01_05", None, 10, 20, 50, None, 4, "others", 7),    # row 13: no subject
        CasmeRow("05", "EP09_05f", 1, 2, 3, "others"),                 # row 14: duplicate of row 4
        CasmeRow(8, "EP01_06", 10, 20, 50, "others", objective_class=None),  # row 15: int subject, no class
    ]
    path = write_casme2_coding(tmp_path / "CASME2-coding-20190701.xlsx", rows)
    quirks = QuirkLog()
    clips = read_casme2_coding(path, quirks)
    assert [(c.subject, c.clip, c.apex, c.row) for c in clips] == [
        ("sub04", "EP12_01f", None, 2), ("sub04", "EP13_01", None, 3), ("sub05", "EP09_05f", 69, 4),
        ("sub05", "EP16_04f", 50, 5), ("sub06", "EP01_01", None, 7), ("sub06", "EP01_02", None, 8),
        ("sub08", "EP01_06", 20, 15)]
    assert clips[-1].objective_class is None
    counts = {kind: (entry.action, entry.count) for kind, entry in quirks.kinds().items()}
    assert counts == {"apex_missing": ("fixed", 2), "apex_outside": ("fixed", 2), "blank_row": ("fixed", 2),
                      "bad_row": ("skipped", 4), "duplicate_row": ("skipped", 1),
                      "objective_class_missing": ("fixed", 1)}
    assert quirks.kinds()["apex_missing"].examples[0].startswith(
        "CASME2-coding-20190701.xlsx row 2 (sub04/EP12_01f)")
    assert "row 4" in quirks.kinds()["duplicate_row"].examples[0]


def test_samm_quirks_counted(tmp_path):
    rows = [
        SammRow("028", "028_4_1", 1071, 1143, 1134, "Anger"),          # row 15: apex > offset (real file)
        SammRow("032", "032_3_1", 4896, 1930, 4970, "Anger"),          # row 16: apex < onset (real file)
        SammRow("032", "032_3_2", 5126, 5127, 5200, "Anger"),          # row 17: apex = onset + 1, valid
        SammRow(6, "006_1_2", 5562, 5588, 5632, "Anger"),              # row 18: int subject
        None,                                                          # row 19: blank
        ("Notes: frames counted from 0",),                             # row 20: free text after the data
    ]
    path = write_samm_codes(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", rows)
    quirks = QuirkLog()
    clips = read_samm_codes(path, quirks)
    assert [(c.subject, c.clip, c.apex) for c in clips] == [
        ("028", "028_4_1", None), ("032", "032_3_1", None), ("032", "032_3_2", 5127), ("006", "006_1_2", 5588)]
    counts = {kind: (entry.action, entry.count) for kind, entry in quirks.kinds().items()}
    assert counts == {"apex_outside": ("fixed", 2), "blank_row": ("fixed", 1), "bad_row": ("skipped", 1)}
    assert "row 20" in quirks.kinds()["bad_row"].examples[0]


def test_trailing_blank_rows_are_not_data(tmp_path):
    path = tmp_path / "CASME2-coding-20190701.xlsx"
    write_casme2_coding(path, CASME_ROWS[:1])
    workbook = openpyxl.load_workbook(path)
    for row in range(3, 6):
        workbook.active.cell(row=row, column=1, value="  ")                     # whitespace-only cells
    workbook.save(path)
    quirks = QuirkLog()
    assert len(read_casme2_coding(path, quirks)) == 1
    assert quirks.kinds() == {}


def test_subject_text_and_number_agree(tmp_path):
    text = read_casme2_coding(write_casme2_coding(tmp_path / "a.xlsx", [CASME_ROWS[0]]), QuirkLog())
    number = read_casme2_coding(write_casme2_coding(tmp_path / "b.xlsx", [
        CasmeRow(1, "EP02_01f", 46, 59, 86, "happiness", "12", 1)]), QuirkLog())
    assert text == number and text[0].subject == "sub01"


@pytest.mark.parametrize("cell, index", [(1, 0), (7, 6), (7.0, 6), (" 3 ", 2), ("I", 0), ("vii", 6), (" IV ", 3)])
def test_objective_class_as_written_gives_its_index(cell, index):
    assert objective_class_index(cell) == index


@pytest.mark.parametrize("cell", [0, 8, -1, 3.5, "3.5", "VIII", "others", True, "1+2"])
def test_objective_class_outside_i_to_vii_is_none(cell):
    assert objective_class_index(cell) is None


@pytest.mark.parametrize("reader, write, first_row, column", [
    (read_casme2_coding, lambda path, rows: write_casme2_coding(path, rows), 2, "J"),
    (read_samm_codes, lambda path, rows: write_samm_codes(path, rows), 15, "K"),
])
@pytest.mark.parametrize("cell", [8, 0, "x", 2.5])
def test_bad_objective_class_names_file_sheet_row_and_column(tmp_path, reader, write, first_row, column, cell):
    row_type = CasmeRow if reader is read_casme2_coding else SammRow
    rows = [row_type("01", "EP01_01", 1, 2, 3, "others", "4", 3),
            row_type("01", "EP01_02", 1, 2, 3, "others", "4", cell)]
    path = write(tmp_path / "codes.xlsx", rows)
    with pytest.raises(UserError) as raised:
        reader(path, QuirkLog())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: sheet ")
    assert f" row {first_row + 1} column {column} (Objective Classes): objective class {cell!r} is not 1..7" in message


# ------------------------------------------------------------------------------------------ errors


def test_missing_header_names_the_file(tmp_path):
    path = tmp_path / "no_header.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["01", "EP02_01f", None, 46, 59, 86])
    workbook.save(path)
    with pytest.raises(UserError, match="no_header.xlsx.*Subject"):
        read_casme2_coding(path, QuirkLog())


def test_missing_column_names_file_and_row(tmp_path):
    path = tmp_path / "SAMM_codes.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["title"])
    workbook.active.append(["Subject", "Filename", "Onset Frame", "Offset Frame", "Action Units", "Estimated Emotion"])
    workbook.save(path)
    with pytest.raises(UserError, match=r"SAMM_codes.xlsx.*header row 2 has no column for apex \(one of apexframe/"):
        read_samm_codes(path, QuirkLog())


@pytest.mark.parametrize("content", [b"this is not a zip file", b"PK\x03\x04 truncated zip", b""])
def test_corrupt_file_names_the_file(tmp_path, content):
    path = tmp_path / "CASME2-coding-20190701.xlsx"
    path.write_bytes(content)
    with pytest.raises(UserError, match="CASME2-coding-20190701.xlsx"):
        read_casme2_coding(path, QuirkLog())


def test_wrong_format_and_missing_file_name_the_file(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("Subject,Filename\n01,EP02_01f\n")
    with pytest.raises(UserError, match="codes.csv"):
        read_samm_codes(path, QuirkLog())
    with pytest.raises(UserError, match="absent.xlsx"):
        read_samm_codes(tmp_path / "absent.xlsx", QuirkLog())


# ------------------------------------------------------------------------------------------ MEGC list


def test_real_megc_list_counts():
    clips, blank = read_megc_list(MEGC_LIST)
    assert len(clips) == 442 and blank == 0
    assert collections.Counter(c.label for c in clips) == {0: 250, 1: 109, 2: 83}
    assert collections.Counter(c.dataset for c in clips) == {"smic": 164, "casme2": 145, "samm": 133}
    subjects = collections.Counter(dataset for dataset, _ in {(c.dataset, c.subject) for c in clips})
    assert subjects == {"smic": 16, "casme2": 24, "samm": 28} and sum(subjects.values()) == 68
    per_class = collections.Counter((c.dataset, c.label) for c in clips)
    assert [per_class[("smic", k)] for k in range(3)] == [70, 51, 43]
    assert [per_class[("casme2", k)] for k in range(3)] == [88, 32, 25]
    assert [per_class[("samm", k)] for k in range(3)] == [92, 26, 15]
    assert clips[0] == ListedClip("casme2", "sub01", "EP02_01f", 1, 1)


def test_website_copy_with_blank_rows(tmp_path):
    lines = [line for line in MEGC_LIST.read_text().splitlines() if line != "samm,32,032_3_1,0"]
    assert len(lines) == 441
    with_blanks = []
    for number, line in enumerate(lines):
        with_blanks.append(line)
        if number % 10 == 9:
            with_blanks.append(",,,")
    path = tmp_path / "combined_3class_gt-2.csv"
    path.write_text("\r\n".join(with_blanks) + "\r\n")
    quirks = QuirkLog()
    clips, blank = read_megc_list(path, quirks)
    assert len(clips) == 441 and blank == 44 and quirks.count("blank_row") == 44
    assert collections.Counter(c.dataset for c in clips)["samm"] == 132
    assert clips[10].line == 12                               # line numbers count the blank lines


@pytest.mark.parametrize("line, message", [
    ("casme2,sub01,EP02_01f,3", "label '3'"),
    ("casme2,sub01,EP02_01f,x", "label 'x'"),
    ("casme,sub01,EP02_01f,1", "unknown dataset 'casme'"),
    ("casme2,sub01,EP02_01f", "expected 4 fields"),
    ("casme2,,EP02_01f,1", "empty subject"),
    ("casme2,sub01,EP02_01f,1,extra", "expected 4 fields"),
    ("casme2,sub01,EP19_05f,0", "repeats line 2"),
])
def test_bad_megc_row_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "list.csv"
    path.write_text(f"casme2,sub01,EP02_01f,1\ncasme2,sub01,EP19_05f,0\n,,,\n{line}\n")
    with pytest.raises(UserError, match=rf"list.csv line 4: .*{message}"):
        read_megc_list(path)


def test_disk_names():
    assert disk_names(ListedClip("smic", "s01", "s01_ne_01", 0, 1)) == ("s1", "s1_ne_01")
    assert disk_names(ListedClip("smic", "s20", "s20_sur_05", 2, 1)) == ("s20", "s20_sur_05")
    assert disk_names(ListedClip("smic", "s3", "s3_po_11", 1, 1)) == ("s3", "s3_po_11")
    assert disk_names(ListedClip("samm", "6", "006_1_2", 0, 1)) == ("006", "006_1_2")
    assert disk_names(ListedClip("samm", "32", "032_3_1", 0, 1)) == ("032", "032_3_1")
    assert disk_names(ListedClip("casme2", "sub01", "EP02_01f", 1, 1)) == ("sub01", "EP02_01f")
    with pytest.raises(UserError, match="line 7"):
        disk_names(ListedClip("smic", "subject1", "s1_ne_01", 0, 7))


def test_disk_names_of_the_real_list_are_unique():
    clips, _ = read_megc_list(MEGC_LIST)
    names = [(c.dataset,) + disk_names(c) for c in clips]
    assert len(set(names)) == 442
    assert {subject for dataset, subject, _ in names if dataset == "smic"} == {
        f"s{n}" for n in (1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 18, 19, 20)}
    assert all(clip.startswith(subject + "_") for dataset, subject, clip in names if dataset in ("smic", "samm"))
