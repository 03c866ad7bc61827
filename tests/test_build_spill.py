"""Builds past the in-memory shuffle limit spill to local files without TensorFlow (datasets/core/spill.py).

The limit (``spill.MEMORY_LIMIT_BYTES``) is lowered to a few KB so that a tiny
build spills from its first example. TensorFlow is not installed (checked), so
a spill through ``tf.io.gfile`` (TFDS's own buckets) would fail these builds.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from tensorflow_datasets.core import shuffle

from datasets import build
from datasets.core import spill
from datasets.core.builder import FaceOptions
from merjax.errors import UserError
from tests import fake_databases as fake

SPILL_LIMIT = 4096   # bytes: below one example of either dataset below, so every example is spilled


def write_small_smic(root: Path) -> None:
    """Three faces of SMIC-HS's raw tree, one per class."""
    for index, (subject, emotion, clip) in enumerate((("s1", "negative", "s1_ne_01"), ("s2", "positive", "s2_po_01"),
                                                      ("s3", "surprise", "s3_sur_01"))):
        fake.write_frames(fake.smic_clip_folder(root, subject, emotion, clip),
                          fake.FakeClip(index, range(100, 105)), fake.smic_frame_name(cropped=False))


def build_synthetic(data_dir: Path) -> str:
    return build.build("synthetic_me/tiny", str(data_dir))


def build_smic(data_dir: Path) -> str:
    manual_dir = data_dir.parent / "SMIC"
    if not manual_dir.exists():
        write_small_smic(manual_dir)
    return build.build("smic/hs", str(data_dir), str(manual_dir), faces=FaceOptions(crop_size=32))


def spied_bucket_adds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the LocalBucket files records are added to from now on."""
    paths: list[str] = []
    add = spill.LocalBucket.add

    def spied_add(bucket: spill.LocalBucket, key: int, data: bytes) -> None:
        paths.append(bucket.path)
        add(bucket, key, data)

    monkeypatch.setattr(spill.LocalBucket, "add", spied_add)
    return paths


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("build_dataset", [build_synthetic, build_smic], ids=["synthetic_me", "smic"])
def test_spilled_build_writes_the_bytes_of_an_in_memory_build_without_tensorflow(
        build_dataset: Callable[[Path], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert importlib.util.find_spec("tensorflow") is None, "these builds show that no TensorFlow is needed: " \
                                                            "run them where it is not installed"
    bucket_files = spied_bucket_adds(monkeypatch)
    tfds_state = shuffle._Bucket, shuffle.MAX_MEM_BUFFER_SIZE

    in_memory = Path(build_dataset(tmp_path / "in_memory"))
    assert not [path for path in bucket_files if Path(path).is_relative_to(tmp_path)]
    monkeypatch.setattr(spill, "MEMORY_LIMIT_BYTES", SPILL_LIMIT)
    spilled = Path(build_dataset(tmp_path / "spilled"))

    examples = fake.read_examples(str(in_memory))
    spilled_into = [path for path in bucket_files if Path(path).is_relative_to(tmp_path / "spilled")]
    assert len(spilled_into) == len(examples) >= 3, "every example should have gone through a spill file"
    assert len(set(spilled_into)) > 1
    assert not any(Path(path).exists() for path in spilled_into), "spill files are removed once read"
    assert (shuffle._Bucket, shuffle.MAX_MEM_BUFFER_SIZE) == tfds_state

    records = files_under(in_memory)
    assert any(".array_record-" in name for name in records)
    assert files_under(spilled) == records   # array_record shards, dataset_info.json, metadata: byte for byte
    spilled_examples = fake.read_examples(str(spilled))
    assert spilled_examples.keys() == examples.keys()
    for clip, example in examples.items():
        assert spilled_examples[clip].keys() == example.keys()
        for key, value in example.items():
            np.testing.assert_array_equal(spilled_examples[clip][key], value, err_msg=f"{clip}: {key}")


def _never_spills(shuffler: shuffle.Shuffler, hkey: int, data: bytes) -> None:
    shuffler._mem_buffer.append((hkey, data))


def _spills_through_tensorflow(shuffler: shuffle.Shuffler, hkey: int, data: bytes) -> None:
    raise ModuleNotFoundError("No module named 'tensorflow'")


@pytest.mark.parametrize("attribute, replacement, reason", [
    ("_add_to_mem_buffer", _never_spills, "no longer spills its shuffle buffer"),
    ("_add_to_bucket", _spills_through_tensorflow, "ModuleNotFoundError: No module named 'tensorflow'"),
])
def test_a_tfds_that_shuffles_otherwise_is_refused_in_one_line_before_building(
        attribute: str, replacement: Callable, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shuffle.Shuffler, attribute, replacement)
    tfds_state = shuffle._Bucket, shuffle.MAX_MEM_BUFFER_SIZE
    with pytest.raises(UserError) as error:
        build_synthetic(tmp_path)
    message = str(error.value)
    assert reason in message and "install tensorflow-datasets>=4.9.10,<4.10" in message and "\n" not in message
    assert not list(tmp_path.rglob("*.array_record*"))
    assert (shuffle._Bucket, shuffle.MAX_MEM_BUFFER_SIZE) == tfds_state


def test_a_tfds_without_the_shuffle_internals_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(shuffle, "_Bucket")
    with pytest.raises(UserError, match=r"has no shuffle.MAX_MEM_BUFFER_SIZE or shuffle._Bucket"):
        with spill.tf_free_spill():
            pass


def test_local_bucket_reads_back_its_records_and_names_a_truncated_file(tmp_path: Path) -> None:
    bucket = spill.LocalBucket(tmp_path / "bucket.tmp")
    assert list(bucket.read_values()) == []
    records = [(2**128 - 1, b"last key"), (0, b""), (12345, os.urandom(1000))]
    for key, data in records:
        bucket.add(key, data)
    assert len(bucket) == 3 and bucket.size == 1008
    assert list(bucket.read_values()) == records
    data = (tmp_path / "bucket.tmp").read_bytes()
    (tmp_path / "bucket.tmp").write_bytes(data[:-10])
    with pytest.raises(OSError, match=r"bucket.tmp is truncated"):
        list(bucket.read_values())
    bucket.del_file()
    assert not (tmp_path / "bucket.tmp").exists()
    bucket.del_file()   # a bucket nothing was added to has no file: nothing to remove
