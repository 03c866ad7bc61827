"""Every real-database builder: a wrong or empty manual_dir is an error showing the expected layout."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from datasets import build
from datasets.core.builder import FaceOptions
from datasets.core.layout import ManualDirError

REAL = ("smic/hs", "casme2/raw", "samm/raw", "megc2019/composite", "clip_folder")


def _layout(name: str) -> str:
    dataset = name.split("/")[0]
    return importlib.import_module(f"datasets.{dataset}.{dataset}").LAYOUT.strip()


@pytest.mark.parametrize("name", REAL)
def test_empty_manual_dir_shows_the_expected_layout(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManualDirError, match="does not exist or is empty") as error:
        build.build(name, str(tmp_path / "data"), str(tmp_path / "empty"), faces=FaceOptions(crop_size=32))
    assert _layout(name) in str(error.value)


@pytest.mark.parametrize("name", REAL)
def test_unrelated_manual_dir_shows_the_layout_and_what_is_there(tmp_path: Path, name: str) -> None:
    (tmp_path / "photos" / "holiday").mkdir(parents=True)
    (tmp_path / "photos" / "notes.txt").write_text("not a database")
    with pytest.raises(ManualDirError) as error:
        build.build(name, str(tmp_path / "data"), str(tmp_path / "photos"), faces=FaceOptions(crop_size=32))
    message = str(error.value)
    assert _layout(name) in message and "holiday/" in message and "notes.txt" in message


def test_missing_manual_dir_argument_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManualDirError, match="no --manual_dir given"):
        build.build("smic/hs", str(tmp_path / "data"), None, faces=FaceOptions(crop_size=32))
