"""Every reported number over seeds: the whole run once per seed, summarised as mean, std and interval.

With ``--config.seeds="(0,1,2)"`` the run of seed K (``config.seed=K``: fold
assignment, initial weights, sampling, augmentation) goes to ``WORKDIR/seed_K``
with the same workdir claim as a top-level run (lock + config check), so an
interrupted seed resumes and a finished one is reused; adding a seed to the
tuple later runs only the new one. The top-level ``summary.json`` holds, for
accuracy, UF1 and UAR pooled over folds, the mean over seeds, the sample std
(ddof=1) and a Student-t 95 % interval of the mean, ``per_seed`` (each seed's
own summary) and the provenance; ``summary.md`` and ``seeds.png`` show them.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import ml_collections
import numpy as np
from scipy import stats

from experiments import provenance as provenance_lib
from experiments import report
from experiments import workdir as workdir_lib
from merjax import stamps
from merjax.errors import UserError
from merjax.train.metrics import SUMMARY_METRICS

STD_DDOF = 1   # the seeds are a sample of the seeds one could run: sample std
# Provenance keys that differ between seeds by design.
PER_SEED_KEYS = frozenset({"seed", "seeds", "config_sha256", "wall_seconds", "stage_folds.total",
                           "stage_folds.reused"})

RunOne = Callable[[ml_collections.ConfigDict, str], dict[str, Any]]


def checked_seeds(seeds: Sequence[Any]) -> list[int]:
    """``seeds`` as a list of distinct non-negative ints, or a UserError naming the bad value."""
    values = list(seeds)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"config.seeds: {value!r} is not a non-negative integer; pass e.g. "
                            f'--config.seeds="(0,1,2)"')
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise UserError(f"config.seeds: seed {repeated[0]} is given more than once; list each seed once")
    return values


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` for one seed's run: ``seed=K`` and no ``seeds``."""
    one = copy.deepcopy(config)
    one.seed = seed
    one.seeds = ()
    return one


def run_seeds(config: ml_collections.ConfigDict, workdir: str, run_one: RunOne) -> dict[str, Any]:
    """Runs ``run_one`` (e.g. ``cv.run``) per seed of ``config.seeds`` in ``workdir/seed_K``.

    Returns the summary over seeds, also written to ``workdir`` (``write``).

    Raises:
      UserError: for a bad or repeated seed, or (from the claim) a seed folder in
        use or holding a run of another configuration.
    """
    seeds = checked_seeds(config.seeds)
    if not seeds:
        raise UserError("config.seeds is empty; give the seeds to run, e.g. --config.seeds=\"(0,1,2)\"")
    started = time.perf_counter()
    summaries = []
    for seed in seeds:
        one = seed_config(config, seed)
        seed_dir = os.path.join(workdir, f"seed_{seed}")
        with workdir_lib.claim(seed_dir, one, overwrite=False):
            summaries.append(run_one(one, seed_dir))
    summary = aggregate(summaries, seeds_provenance(config, summaries, time.perf_counter() - started))
    write(workdir, summary)
    return summary


def seeds_provenance(config: ml_collections.ConfigDict, summaries: Sequence[dict[str, Any]],
                     wall_seconds: float) -> dict[str, Any]:
    """This process's provenance for the run over seeds, naming what differs between the seeds' own records.

    A seed's record describes the process that wrote its summary; seeds run at
    other times (an extended tuple, a resumed run) may differ in code or
    packages, and ``differs_between_seeds`` says in what.
    """
    from experiments import pretrain   # imports experiments.cv

    recorded = [summary.get("provenance") for summary in summaries]
    directories = [dataset["directory"] for dataset in recorded[0]["datasets"]] if recorded[0] else []
    # The seeds' runs resolved 'pretrained:synthetic_faces' to the cached file: record that file too.
    record = provenance_lib.collect(pretrain.with_weights_resolved(config), directories)
    record["wall_seconds"] = round(wall_seconds, 1)
    if all(r is not None and "stage_folds" in r for r in recorded):
        record["stage_folds"] = {key: sum(r["stage_folds"][key] for r in recorded) for key in ("total", "reused")}
    if any(r is None for r in recorded):
        record["differs_between_seeds"] = ["provenance (not recorded for every seed)"]
        return record
    flat = [stamps.flatten(r) for r in recorded]
    keys = sorted(set().union(*flat) - PER_SEED_KEYS)
    record["differs_between_seeds"] = [key for key in keys if any(f.get(key) != flat[0].get(key) for f in flat)]
    return record


def aggregate(summaries: Sequence[dict[str, Any]], provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mean, sample std (ddof=1) and t-interval over seeds of each seed's pooled accuracy, UF1 and UAR."""
    first = summaries[0]
    count = len(summaries)
    summary: dict[str, Any] = {key: first[key] for key in ("experiment", "dataset", "classes", "protocol")}
    summary["subject_independent"] = first.get("subject_independent", True)
    summary["seeds"] = [s["seed"] for s in summaries]
    summary["num_seeds"] = count
    # Student t: the mean over seeds ± t_{(1+c)/2, n-1} · std / sqrt(n); needs two seeds.
    t_factor = stats.t.ppf((1 + report.CONFIDENCE) / 2, count - 1) / np.sqrt(count) if count > 1 else None
    summary["interval"] = {
        "method": f"Student t interval of the mean over {count} seeds: mean ± t((1 + c)/2, n - 1) · std / √n "
                  f"(std with ddof={STD_DDOF}); it assumes the seeds' scores roughly normal and is not clipped to "
                  f"[0, 1] (a bound outside it says that the seeds are too few)",
        "confidence": report.CONFIDENCE,
    }
    for key in SUMMARY_METRICS:
        values = np.array([s[key] for s in summaries], np.float64)
        mean = float(values.mean())
        std = float(values.std(ddof=STD_DDOF)) if count > 1 else None
        summary[key] = mean
        summary[f"{key}_std"] = std
        summary["interval"][key] = [mean - t_factor * std, mean + t_factor * std] if count > 1 else None
    summary["std_ddof"] = STD_DDOF
    summary["chance"] = {kind: _mean_over_seeds([s["chance"][kind] for s in summaries])
                         for kind in ("majority", "uniform")}
    if "stages" in first:   # a multi-stage run: each tested stage's pooled metrics over seeds
        summary["stages"] = {name: _stage_over_seeds([s["stages"][name] for s in summaries])
                             for name, stage in first["stages"].items() if "uf1" in stage}
    summary["per_seed"] = list(summaries)
    summary["provenance"] = provenance
    return summary


def _stage_over_seeds(stages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over seeds of one stage's pooled metrics."""
    over_seeds: dict[str, Any] = {"final": stages[0]["final"]}
    for key in SUMMARY_METRICS:
        values = np.array([stage[key] for stage in stages], np.float64)
        over_seeds[key] = float(values.mean())
        over_seeds[f"{key}_std"] = float(values.std(ddof=STD_DDOF)) if len(values) > 1 else None
    return over_seeds


def _mean_over_seeds(levels: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    return {key: None if any(level[key] is None for level in levels)
            else float(np.mean([level[key] for level in levels])) for key in SUMMARY_METRICS}


def _value_and_interval(summary: dict[str, Any], key: str) -> str:
    return f"{summary[key]:.4f} {report.format_interval(summary['bootstrap'][key])}"


def markdown(summary: dict[str, Any]) -> str:
    """One row per seed (pooled metrics with their bootstrap interval), mean ± std, the t-interval, chance."""
    seeds = ", ".join(str(seed) for seed in summary["seeds"])
    interval = summary["interval"]
    confidence = f"{100 * interval['confidence']:g} %"
    lines = [
        f"# {summary['experiment']} on {summary['dataset']} ({summary['protocol']}), seeds {seeds}",
        "",
        *([f"**Not subject-independent**: {summary['protocol']} puts clips of one subject on both sides of a "
           f"fold, so these scores are optimistic next to kfold_by_subject or loso.", ""]
          if not summary.get("subject_independent", True) else []),
        "| seed | accuracy | UF1 | UAR | clips |",
        "|---|---|---|---|---|",
    ]
    for one in summary["per_seed"]:
        lines.append(f"| {one['seed']} | " + " | ".join(_value_and_interval(one, key) for key in SUMMARY_METRICS)
                     + f" | {one['num_clips']} |")
    lines.append(f"| mean ± std (ddof={summary['std_ddof']}) | "
                 + " | ".join(report.format_mean_std(summary[key], summary[f"{key}_std"]) for key in SUMMARY_METRICS)
                 + " | |")
    lines.append(f"| {confidence} t-interval of the mean | "
                 + " | ".join("n/a (one seed)" if interval[key] is None else report.format_interval(interval[key])
                              for key in SUMMARY_METRICS) + " | |")
    chance = summary["chance"]
    lines.append(f"| chance: training-side majority (mean over seeds) | {report.format_scores(chance['majority'])} | |")
    lines.append(f"| chance: uniform guess (expected, mean over seeds) | {report.format_scores(chance['uniform'])} | |")
    if "stages" in summary:
        lines += ["", "| stage (mean ± std over seeds) | accuracy | UF1 | UAR |", "|---|---|---|---|"]
        for name, stage in summary["stages"].items():
            lines.append(f"| {name}{' (final)' if stage['final'] else ''} | " + " | ".join(
                report.format_mean_std(stage[key], stage[f"{key}_std"]) for key in SUMMARY_METRICS) + " |")
    lines += [
        "",
        f"Each seed's row: its metrics pooled over folds, with the {confidence} bootstrap interval over its test "
        f"clips in brackets (details in seed_K/summary.md). Over seeds: {interval['method']}.",
        "",
        "## Provenance",
        "",
    ] + provenance_lib.markdown_lines(summary["provenance"])
    return "\n".join(lines) + "\n"


def plot_seeds(summary: dict[str, Any], path: str) -> None:
    """Each seed's pooled accuracy/UF1/UAR as points, the mean ± std as a bar beside them, uniform chance dashed."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    positions = np.arange(len(SUMMARY_METRICS))
    offsets = np.linspace(-0.25, 0.05, summary["num_seeds"]) if summary["num_seeds"] > 1 else [-0.1]
    for index, (one, offset) in enumerate(zip(summary["per_seed"], offsets)):
        ax.plot(positions + offset, [one[key] for key in SUMMARY_METRICS], "o", color=f"C{index}",
                label=f"seed {one['seed']}")
    ax.errorbar(positions + 0.22, [summary[key] for key in SUMMARY_METRICS],
                yerr=[summary[f"{key}_std"] or 0.0 for key in SUMMARY_METRICS], fmt="s", color="black",
                capsize=5, label=f"mean ± std (ddof={summary['std_ddof']})")
    for position, key in zip(positions, SUMMARY_METRICS):
        ax.hlines(summary["chance"]["uniform"][key], position - 0.4, position + 0.4, colors="gray",
                  linestyles="dashed", label="uniform guess (expected)" if position == 0 else None)
    ax.set_xticks(positions, ["accuracy", "UF1", "UAR"])
    ax.set_ylabel("score, pooled over folds")
    ax.set_title(f"{summary['experiment']} on {summary['dataset']}: seeds "
                 f"{', '.join(str(seed) for seed in summary['seeds'])}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    report.save_figure(fig, path)


def write(workdir: str, summary: dict[str, Any]) -> None:
    """Writes summary.json, summary.md and seeds.png (``report.write_results``)."""
    report.write_results(workdir, "summary", summary, markdown(summary),
                         {"seeds.png": functools.partial(plot_seeds, summary)})
