"""A real multi-process run: two JAX processes on this machine (CPU, gloo) train the smoke experiment.

Both processes run ``python -m experiments.smic_bilstm`` with ``--coordinator``
on localhost, each with one CPU device; the same command in one process with
two emulated CPU devices makes the same 2-device mesh, so the global batches,
their split and the XLA program are the same and only the transport of the
gradient all-reduce differs (gloo between processes, memory within one). A sum
of two operands is the same in either order, so the two runs must agree on
everything they report, bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from merjax.errors import UserError
from merjax.train import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_SECONDS = 900   # for all three processes together: a hung collective fails the test, never CI


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _start(command: list[str], log_path, devices: int) -> subprocess.Popen:
    """Starts ``command`` on the CPU with ``devices`` CPU devices, its output to ``log_path``."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    with open(log_path, "w") as log:   # a file, not a pipe: three chatty processes never block on a full pipe
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _wait_all(processes: dict[str, subprocess.Popen], logs: dict, timeout: float) -> None:
    """Waits for every process; on a timeout or a failure kills the rest and fails, showing the logs."""
    deadline = time.monotonic() + timeout
    try:
        for name, process in processes.items():
            try:
                returncode = process.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {timeout} s (a hung collective?):\n"
                            + logs[name].read_text()[-3000:])
            assert returncode == 0, f"{name} exited with {returncode}:\n" + logs[name].read_text()[-3000:]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _fold_results(workdir) -> dict[str, dict]:
    return {entry.name: json.loads((entry / "result.json").read_text())
            for entry in sorted(workdir.iterdir()) if (entry / "result.json").exists()}


def _untimed(record: dict) -> dict:
    """A fold result or summary without what differs between equal runs: seconds and the provenance record."""
    record = {k: v for k, v in record.items() if k not in ("wall_seconds", "provenance")}
    if "history" in record:
        record["history"] = [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in record["history"]]
    return record


@pytest.mark.slow
def test_two_processes_train_the_smoke_experiment_like_one_process(tmp_path, tiny_data_dir):
    experiment = [sys.executable, "-m", "experiments.smic_bilstm",
                  "--config=experiments/configs/smic_bilstm.py:smoke", f"--config.data.data_dir={tiny_data_dir}"]
    coordinator = f"localhost:{_free_port()}"
    one, two = tmp_path / "one_process", tmp_path / "two_processes"
    logs = {name: tmp_path / f"{name}.log" for name in ("one process", "process 0", "process 1")}
    processes = {
        f"process {i}": _start(experiment + [f"--workdir={two}", f"--coordinator={coordinator}",
                                             "--num_processes=2", f"--process_id={i}"], logs[f"process {i}"], 1)
        for i in range(2)}
    processes["one process"] = _start(experiment + [f"--workdir={one}"], logs["one process"], 2)
    _wait_all(processes, logs, TIMEOUT_SECONDS)

    for i in range(2):   # each process joined the job and drove one of its two devices
        assert f"process {i} of 2: 1 of 2 cpu devices" in logs[f"process {i}"].read_text()
    # The job leaves the files one process leaves (process 0 writes the reports, no second copy or
    # stray temporary file); both processes print the same summary.
    assert sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if "checkpoints" not in p.parts) == \
        sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if "checkpoints" not in p.parts)
    printed = [logs[f"process {i}"].read_text().split("# smic_bilstm", 1)[-1].split("## Provenance")[0]
               for i in range(2)]
    assert "pooled over folds" in printed[0] and printed[0] == printed[1]

    # Exact equality of everything but timings and provenance (see the module docstring): per-clip
    # log-probs as stored (rounded to 1e-5 by cv.predict_clips) and predictions, the per-epoch
    # float32 means of loss, accuracy and gradient norm, the pooled metrics and their intervals.
    single, multi = _fold_results(one), _fold_results(two)
    assert list(multi) == list(single) == ["fold0", "fold1"]
    for name in single:
        assert len(single[name]["history"]) == 2
        assert _untimed(multi[name]) == _untimed(single[name]), name
    summaries = [_untimed(json.loads((workdir / "summary.json").read_text())) for workdir in (one, two)]
    assert summaries[1] == summaries[0]



# Each process of a two-process job needs the tiny dataset, built on first use into an empty data_dir.
BUILD_ON_FIRST_USE = """
import sys
from datasets.build import ensure_all_built
from merjax.train import distributed
print(distributed.initialize(sys.argv[1], 2, int(sys.argv[2])))
with distributed.process_zero_first("build"):
    print("built" if ensure_all_built("synthetic_me/tiny", sys.argv[3])[0].built else "reused")
"""


def test_process_zero_builds_a_dataset_first_and_the_other_process_reuses_it(tmp_path):
    # Started at once, both would build it and one would fail renaming its copy into place.
    coordinator, data_dir = f"localhost:{_free_port()}", str(tmp_path / "data")
    logs = {f"process {i}": tmp_path / f"process {i}.log" for i in range(2)}
    processes = {name: _start([sys.executable, "-c", BUILD_ON_FIRST_USE, coordinator, str(i), data_dir], log, 1)
                 for i, (name, log) in enumerate(logs.items())}
    _wait_all(processes, logs, 300)
    said = [[line for line in log.read_text().splitlines() if line in ("built", "reused")] for log in logs.values()]
    assert said == [["built"], ["reused"]]


@pytest.mark.parametrize("coordinator, num_processes, process_id, named", [
    ("localhost", 2, 0, "'localhost' is not HOST:PORT"),
    ("localhost:port", 2, 0, "'localhost:port' is not HOST:PORT"),
    ("localhost:1234", 0, 0, "num_processes 0"),
    ("localhost:1234", 2, 2, "process_id 2 with num_processes 2"),
])
def test_initialize_names_a_bad_address_or_index(coordinator, num_processes, process_id, named):
    with pytest.raises(UserError, match=named):   # refused before JAX is touched
        distributed.initialize(coordinator, num_processes, process_id)
