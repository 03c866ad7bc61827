"""``python -m experiments.window_sweep``: seed 001's Table 3 (window length N over seeds) as a command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments import window_sweep
from experiments.configs import smic_bilstm, smic_vggface2
from merjax.errors import UserError
from tests.test_report import clip_set, seed_summary  # noqa: F401 - clip_set: the fixture of test_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_windows_are_parsed_and_bad_values_named():
    assert window_sweep.parse_windows("11,13,15,17") == [11, 13, 15, 17]
    assert window_sweep.parse_windows(" 6, 4") == [6, 4]
    for bad, message in (("0", "'0' is not a window length of at least 2 frames"),
                         ("a", "'a' is not a window length"), ("11,,13", "'' is not a window length"),
                         ("", "--windows is empty"), ("13,13", "N=13 is given twice")):
        with pytest.raises(UserError, match=message) as error:
            window_sweep.parse_windows(bad)
        assert "\n" not in str(error.value)


def test_each_window_sets_the_sampler_and_the_resampled_length():
    config = smic_bilstm.get_config("smoke")
    config.data.clip_ops = ("resize(size=16)", "resample_time(frames=13)")
    swept = window_sweep.window_config(config, 9)
    assert swept.sampler.window == 9
    assert tuple(swept.data.clip_ops) == ("resize(size=16)", "resample_time(frames=9)")
    assert config.sampler.window == 4 and config.data.clip_ops[1] == "resample_time(frames=13)"   # untouched
    assert window_sweep.resamples_clips(config)
    config.data.clip_ops = ()
    assert tuple(window_sweep.window_config(config, 9).data.clip_ops) == ()
    assert not window_sweep.resamples_clips(config)


def test_a_model_of_single_frames_is_refused():
    with pytest.raises(UserError, match="sampler 'frames', which reads no window"):
        window_sweep.window_config(smic_vggface2.get_config("smoke"), 9)


def test_sweep_runs_each_window_over_the_seeds_in_its_folder_and_writes_the_table(clip_set, tmp_path):
    ran = []

    def run_one(config, workdir):
        ran.append((config.sampler.window, config.seed, os.path.relpath(workdir, tmp_path)))
        return seed_summary(clip_set, config.seed)

    config = smic_bilstm.get_config("smoke")
    config.seeds = (0, 1)
    sweep = window_sweep.run(config, str(tmp_path), [6, 4], run_one)
    assert ran == [(6, 0, "N_6/seed_0"), (6, 1, "N_6/seed_1"), (4, 0, "N_4/seed_0"), (4, 1, "N_4/seed_1")]
    assert json.loads((tmp_path / "N_4" / "config.json").read_text())["sampler"]["window"] == 4
    written = json.loads((tmp_path / "window_sweep.json").read_text())
    assert written["windows"] == [4, 6] and written["seeds"] == [0, 1] and not written["clips_resampled_to_n"]
    over_seeds = json.loads((tmp_path / "N_6" / "summary.json").read_text())
    assert written["rows"][1]["uf1"] == over_seeds["uf1"] and written["rows"][1]["uf1_std"] == over_seeds["uf1_std"]
    table = (tmp_path / "window_sweep.md").read_text()
    assert table == window_sweep.markdown(sweep) and "seeds 0, 1" in table and "| 4 | " in table
    assert (tmp_path / "window_sweep.png").read_bytes().startswith(b"\x89PNG")


def _command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.window_sweep", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_command_line_sweeps_the_smoke_preset_and_names_bad_windows(tmp_path, tiny_data_dir):
    workdir = tmp_path / "sweep"
    result = _command("--config=experiments/configs/smic_bilstm.py:smoke", f"--config.data.data_dir={tiny_data_dir}",
                      "--config.data.clip_ops=('resample_time(frames=13)',)", "--config.train.epochs=1",
                      "--config.model.backbone.stage_sizes=(1,)", "--config.seeds=(0,)", "--windows=4,6",
                      f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| N | accuracy | UF1 | UAR |" in result.stdout and "| 6 | " in result.stdout
    for window in (4, 6):
        config = json.loads((workdir / f"N_{window}" / "config.json").read_text())
        assert config["sampler"]["window"] == window
        assert config["data"]["clip_ops"] == [f"resample_time(frames={window})"]
        assert (workdir / f"N_{window}" / "seed_0" / "summary.json").is_file()
    assert json.loads((workdir / "window_sweep.json").read_text())["windows"] == [4, 6]
    assert (workdir / "window_sweep.md").read_text() in result.stdout
    assert (workdir / "window_sweep.png").stat().st_size > 0
    bad = _command("--config=experiments/configs/smic_bilstm.py:smoke", "--windows=a", f"--workdir={tmp_path / 'bad'}")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --windows='a': 'a' is not a window length of at least 2 frames; pass window lengths of at least 2 "
        "frames joined by commas, e.g. --windows=11,13,15,17"]
