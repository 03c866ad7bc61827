"""The arrays-only pickle reader: published layouts load, everything else is a clear error, never a crash."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from merjax.weights.safe_pickle import RefusedGlobal, load_arrays_pickle

# A Python 2 protocol-2 pickle of {'a': float32 [1.5, -2]} as numpy 1.x on Python 2 writes it
# (raw data as a py2 str, read back as latin1 text): the published VGGFace2 pickles' layout.
_RAW = np.array([1.5, -2.0], "<f4").tobytes()
PY2_PICKLE = (
    b"\x80\x02}q\x00U\x01aq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04"
    b"U\x01b\x87q\x05Rq\x06(K\x01K\x02\x85q\x07cnumpy\ndtype\nq\x08U\x02f4K\x00K\x01\x87Rq\t(K\x03U\x01<NNN"
    b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x08" + _RAW + b"tbs.")


def _write(tmp_path, data: bytes, name: str = "w.pkl") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_python2_layout_loads(tmp_path):
    loaded = load_arrays_pickle(_write(tmp_path, PY2_PICKLE))
    np.testing.assert_array_equal(loaded["a"], np.array([1.5, -2.0], np.float32))
    assert loaded["a"].dtype == np.float32


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_arrays_scalars_and_containers_round_trip(tmp_path, protocol):
    rng = np.random.default_rng(0)
    state = {"w": rng.normal(size=(3, 2, 1, 4)).astype(np.float32),
             "fortran": np.asfortranarray(rng.normal(size=(3, 5))),
             "big_endian": np.arange(4, dtype=">i4"), "flags": np.array([True, False]),
             "count": np.int64(7), "nested": [np.zeros(0, np.float16), (np.uint8(3),)]}
    loaded = load_arrays_pickle(_write(tmp_path, pickle.dumps(state, protocol=protocol)))
    for key in ("w", "fortran", "big_endian", "flags"):
        np.testing.assert_array_equal(loaded[key], state[key])
        assert loaded[key].dtype == state[key].dtype.newbyteorder("=")
    assert loaded["count"] == 7 and loaded["nested"][1][0] == 3 and loaded["nested"][0].shape == (0,)


def test_object_arrays_and_foreign_globals_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"w\.pkl: truncated or corrupt.*not a plain number type"):
        load_arrays_pickle(_write(tmp_path, pickle.dumps({"x": np.array([{}, 1], dtype=object)}, protocol=2)))
    with pytest.raises(RefusedGlobal, match=r"refusing to load (__builtin__|builtins)\.set"):
        load_arrays_pickle(_write(tmp_path, pickle.dumps({"x": {1, 2}}, protocol=2)))


def test_inconsistent_array_record_is_named(tmp_path):
    short = PY2_PICKLE.replace(b"U\x08" + _RAW, b"U\x04" + _RAW[:4])
    with pytest.raises(ValueError, match=r"needs 8 bytes, the file holds 4"):
        load_arrays_pickle(_write(tmp_path, short))


@pytest.mark.slow
def test_corrupted_bytes_never_crash_the_interpreter(tmp_path):
    """Thousands of single-byte corruptions, in a child process: each loads or raises, none crashes."""
    script = textwrap.dedent(f"""
        import pickle, sys
        import numpy as np
        from merjax.weights.safe_pickle import load_arrays_pickle
        rng = np.random.default_rng(0)
        state = {{"conv1.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                  "bn1.running_var": np.ones(4, np.float32), "count": np.int64(3)}}
        data = bytearray(pickle.dumps(state, protocol=2))
        path = {str(tmp_path / "fuzz.pkl")!r}
        outcomes = {{"loaded": 0, "error": 0}}
        for trial in range(3000):
            corrupt = bytearray(data)
            corrupt[int(rng.integers(len(data)))] = int(rng.integers(256))
            open(path, "wb").write(corrupt)
            try:
                load_arrays_pickle(path)
                outcomes["loaded"] += 1
            except (ValueError, pickle.UnpicklingError):
                outcomes["error"] += 1
        print(outcomes)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'error'" in result.stdout
