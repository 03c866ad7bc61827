"""Seed 001's Table 3 as a command: the window length N swept, each N over seeds.

::

    python -m experiments.window_sweep [--config=experiments/configs/smic_bilstm.py:default] \\
        --windows=11,13,15,17 --config.seeds="(0,1,2)" --workdir=workdirs/window_sweep

Seed 001 tested windows of N = 11 to 17 frames (§4.4) and reports N = 13 and
15 for its LSTM and BiLSTM in Table 3 (13 is best for both). For each N of
``--windows`` (default 11,13,15,17) this runs the experiment of ``--config``
(default ``configs/window_sweep.py``: ``smic_bilstm``; pass
``--config=experiments/configs/smic_lstm.py:PRESET`` for Exp-II) with
``sampler.window=N`` over the seeds of ``config.seeds`` (``experiments.seeds``;
without seeds, ``config.seed`` alone) in ``WORKDIR/N_<n>/``, itself claimed
(lock + config check, ``config.json`` with its N), each seed in
``WORKDIR/N_<n>/seed_K/``. A finished N or seed is reused and an interrupted
one resumes (the engine's stamps); a longer ``--windows`` list or seed tuple
runs only what is new.

When ``data.clip_ops`` resamples the clips in time (a ``resample_time(frames=...)``
entry), that entry's ``frames`` is set to N as well: such a config resamples
every clip to as many frames as one window holds, so that one window spans
the whole clip (neutral onset, apex, offset). Sweeping the window alone would
instead pad windows longer than the resampled clips or cut them into several
shorter windows that miss the onset or the apex: a change of N would then
measure that, not the window length. Without such an entry the clips keep
their length and windows of N consecutive frames slide over them, as in the seed.

Outputs in the workdir: ``window_sweep.md`` (the table it prints: per N the
accuracy, UF1 and UAR pooled over folds, mean ± sample std over the seeds),
``window_sweep.json`` (the same with each seed's values) and
``window_sweep.png`` (UF1 and accuracy against N with std error bars).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from experiments import report, seeds   # report selects matplotlib's headless Agg backend
from experiments import stages as stages_lib
from experiments import workdir as workdir_lib
from merjax.data import clip_ops, samplers
from merjax.errors import UserError
from merjax.train.metrics import SUMMARY_METRICS

WINDOWS_FLAG = "--windows"
SEED_001_WINDOWS = "11,13,15,17"    # Table 3
RESAMPLE_OP = "resample_time"
METRIC_NAMES = {"accuracy": "accuracy", "uf1": "UF1", "uar": "UAR"}

RunOne = Callable[[ml_collections.ConfigDict, str], dict[str, Any]]


def parse_windows(text: str) -> list[int]:
    """``'11,13,15'`` -> [11, 13, 15]: distinct window lengths of at least 2 frames, or a UserError naming the value."""
    example = f"pass window lengths of at least 2 frames joined by commas, e.g. {WINDOWS_FLAG}={SEED_001_WINDOWS}"
    parts = [part.strip() for part in text.split(",")]
    if not text.strip():
        raise UserError(f"{WINDOWS_FLAG} is empty; {example}")
    windows = []
    for part in parts:
        if not part.isdigit() or int(part) < 2:
            raise UserError(f"{WINDOWS_FLAG}={text!r}: {part!r} is not a window length of at least 2 frames; "
                            f"{example}")
        if int(part) in windows:
            raise UserError(f"{WINDOWS_FLAG}={text!r}: N={int(part)} is given twice; list each window length once")
        windows.append(int(part))
    return windows


def with_resampled_frames(specs: Sequence[str], frames: int) -> tuple[str, ...]:
    """``specs`` with the ``frames`` of every ``resample_time`` entry set to ``frames`` (others as given)."""
    swept = []
    for spec in specs:
        parsed = clip_ops.parse_clip_op(spec)
        if parsed.name == RESAMPLE_OP:
            spec = str(dataclasses.replace(parsed, kwargs={**parsed.kwargs, "frames": frames}))
        swept.append(spec)
    return tuple(swept)


def resamples_clips(config: ml_collections.ConfigDict) -> bool:
    """Whether ``data.clip_ops`` resamples every clip in time (then the sweep resamples them to N too)."""
    return any(clip_ops.parse_clip_op(spec).name == RESAMPLE_OP for spec in config.data.clip_ops)


def window_config(config: ml_collections.ConfigDict, window: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``sampler.window=window`` (and a ``resample_time`` entry's ``frames=window``).

    Raises:
      UserError: when the run's final stage does not read windows (e.g. Exp-I's
        single frames) or sets its own ``sampler.window``.
    """
    swept = copy.deepcopy(config)
    swept.sampler.window = window
    swept.data.clip_ops = with_resampled_frames(tuple(config.data.clip_ops), window)
    final = stages_lib.resolve(swept)[-1]
    sampler = final.config.sampler
    sampler_class = samplers.SAMPLERS.get(sampler.name)   # an unknown name is refused by the config's validation
    if sampler_class and "window" not in {field.name for field in dataclasses.fields(sampler_class)}:
        raise UserError(f"{WINDOWS_FLAG} sweeps sampler.window, but the final stage {final.name!r} uses sampler "
                        f"{sampler.name!r}, which reads no window; sweep a clip experiment "
                        f"(--config=experiments/configs/smic_bilstm.py or smic_lstm.py)")
    if sampler.window != window:
        raise UserError(f"stage {final.name!r} sets its own sampler.window={sampler.window}, which the sweep's "
                        f"N={window} would not change; remove it from --config.stages.{final.name}")
    return swept


def run(config: ml_collections.ConfigDict, workdir: str, windows: Sequence[int], run_one: RunOne) -> dict[str, Any]:
    """Runs ``run_one`` (e.g. ``cv.run``) per window length and seed; returns the sweep, also written (``write``).

    Each N runs in ``workdir/N_<n>`` under its own claim, over the seeds of
    ``config.seeds`` (``config.seed`` alone when empty).
    """
    seed_tuple = tuple(config.seeds) or (config.seed,)
    rows = []
    for window in windows:
        swept = window_config(config, window)
        swept.seeds = seed_tuple
        window_dir = os.path.join(workdir, f"N_{window}")
        with workdir_lib.claim(window_dir, swept, overwrite=False):
            rows.append((window, seeds.run_seeds(swept, window_dir, run_one)))
    sweep = summarize(rows, resampled=resamples_clips(config))
    write(workdir, sweep)
    return sweep


def summarize(rows: Sequence[tuple[int, dict[str, Any]]], *, resampled: bool) -> dict[str, Any]:
    """The sweep from each N's summary over seeds: per N (ascending) the mean and sample std of accuracy, UF1, UAR."""
    rows = sorted(rows, key=lambda row: row[0])
    first = rows[0][1]
    sweep: dict[str, Any] = {key: first[key] for key in ("experiment", "dataset", "classes", "protocol")}
    sweep["subject_independent"] = first.get("subject_independent", True)
    sweep["seeds"] = first["seeds"]
    sweep["std_ddof"] = first["std_ddof"]
    sweep["clips_resampled_to_n"] = resampled
    sweep["windows"] = [window for window, _ in rows]
    sweep["rows"] = [{
        "window": window,
        "folder": f"N_{window}",
        **{key: summary[key] for key in SUMMARY_METRICS},
        **{f"{key}_std": summary[f"{key}_std"] for key in SUMMARY_METRICS},
        "per_seed": {key: [one[key] for one in summary["per_seed"]] for key in SUMMARY_METRICS},
    } for window, summary in rows]
    sweep["chance"] = {"uniform": first["chance"]["uniform"]}
    return sweep


def _seeds_text(sweep: dict[str, Any]) -> str:
    """'seed 0' or 'seeds 0, 1, 2'."""
    return ("seed " if len(sweep["seeds"]) == 1 else "seeds ") + ", ".join(str(seed) for seed in sweep["seeds"])


def markdown(sweep: dict[str, Any]) -> str:
    """Seed 001's Table 3: one row per N, accuracy/UF1/UAR as mean ± std over the seeds, and uniform chance."""
    how = ("each clip resampled in time to N frames (resample_time) and classified from one window of N frames"
           if sweep["clips_resampled_to_n"] else "windows of N consecutive frames slid over each clip")
    lines = [
        f"# Window length N: {sweep['experiment']} on {sweep['dataset']} ({sweep['protocol']}), "
        f"{_seeds_text(sweep)}",
        "",
        *([f"**Not subject-independent**: {sweep['protocol']} puts clips of one subject on both sides of a fold.", ""]
          if not sweep["subject_independent"] else []),
        "| N | " + " | ".join(METRIC_NAMES[key] for key in SUMMARY_METRICS) + " |",
        "|---|---|---|---|",
    ]
    for row in sweep["rows"]:
        lines.append(f"| {row['window']} | " + " | ".join(
            report.format_mean_std(row[key], row[f"{key}_std"]) for key in SUMMARY_METRICS) + " |")
    lines.append(f"| chance: uniform guess (expected) | {report.format_scores(sweep['chance']['uniform'])} |")
    lines += [
        "",
        f"N: {how}. Each cell: the metric pooled over the folds of each seed, mean ± sample std "
        f"(ddof={sweep['std_ddof']}) over {_seeds_text(sweep)}; each N's seeds, folds and provenance in "
        f"N_<n>/summary.md.",
    ]
    return "\n".join(lines) + "\n"


def plot(sweep: dict[str, Any], path: str) -> None:
    """UF1 and accuracy (mean over seeds, std error bars) against N, uniform chance dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    windows = np.asarray(sweep["windows"])
    for index, key in enumerate(("uf1", "accuracy")):
        means = [row[key] for row in sweep["rows"]]
        stds = [row[f"{key}_std"] or 0.0 for row in sweep["rows"]]
        ax.errorbar(windows + (index - 0.5) * 0.08, means, yerr=stds, fmt="o-", capsize=4, color=f"C{index}",
                    label=f"{METRIC_NAMES[key]} (mean ± std)")
        ax.axhline(sweep["chance"]["uniform"][key], color=f"C{index}", linestyle="dashed", linewidth=1,
                   label=f"{METRIC_NAMES[key]}, uniform guess")
    ax.set_xticks(windows)
    ax.set_xlim(windows.min() - 1, windows.max() + 1)
    ax.set_xlabel("window length N (frames)")
    ax.set_ylabel("score pooled over folds")
    ax.set_title(f"{sweep['experiment']} on {sweep['dataset']}: window length N, {_seeds_text(sweep)}",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    report.save_figure(fig, path)


def write(workdir: str, sweep: dict[str, Any]) -> None:
    """Writes window_sweep.json, window_sweep.md and window_sweep.png (``report.write_results``)."""
    report.write_results(workdir, "window_sweep", sweep, markdown(sweep),
                         {"window_sweep.png": functools.partial(plot, sweep)})


def main() -> None:
    from absl import flags

    from experiments import cli, cv

    windows_flag = flags.DEFINE_string("windows", SEED_001_WINDOWS, "window lengths N to sweep, joined by commas")

    def sweep(config: ml_collections.ConfigDict, workdir: str) -> str:
        return markdown(run(config, workdir, parse_windows(windows_flag.value), cv.run))

    cli.main("window_sweep", sweep, check_flags=lambda: parse_windows(windows_flag.value))


if __name__ == "__main__":
    main()
