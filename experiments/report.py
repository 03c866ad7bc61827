"""Reports of a cross-validation run: summary.json, summary.md and figures.

Beside the pooled accuracy, UF1 and UAR, ``summarize`` states how far to trust
them: per fold the metrics over the classes present on its test side too (a
LOSO fold often lacks classes), the spread over folds as a sample std (ddof=1,
stated), a percentile bootstrap interval of the pooled metrics, the chance
levels on the same folds, and the run's provenance (``experiments.provenance``).
"""

from __future__ import annotations

import collections
import functools
import io
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from experiments import provenance as provenance_lib  # noqa: E402
from merjax import files  # noqa: E402
from merjax.data.pipeline import ClipSet  # noqa: E402
from merjax.train import metrics  # noqa: E402

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def summarize(config: ml_collections.ConfigDict, clip_set: ClipSet, results: Sequence[dict[str, Any]],
              provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pools the folds' test predictions: accuracy, UF1, UAR and confusion over all folds, and how far to trust them."""
    names = [r["name"] for r in results]
    class_names = list(clip_set.class_names)
    per_fold = [(r["test"]["labels"], r["test"]["predictions"]) for r in results]
    pooled = metrics.pool_folds(per_fold, clip_set.num_classes, names=names)
    labels = np.concatenate([np.asarray(fold_labels, np.int64) for fold_labels, _ in per_fold])
    predictions = np.concatenate([np.asarray(fold_predictions, np.int64) for _, fold_predictions in per_fold])
    summary = {
        "experiment": config.experiment,
        "dataset": clip_set.name,
        "classes": class_names,
        "protocol": config.protocol.kind,
        # kfold_by_sample puts a subject's clips on both sides of a fold: its scores are optimistic.
        "subject_independent": config.protocol.kind != "kfold_by_sample",
        "seed": config.seed,
        "accuracy": pooled["accuracy"],
        "uf1": pooled["uf1"],
        "uar": pooled["uar"],
        "confusion": pooled["confusion"],
        "num_clips": pooled["num_samples"],
        "absent_classes": [class_names[c] for c in pooled["absent_classes"]],
        "bootstrap": {
            "method": f"percentile bootstrap: {BOOTSTRAP_RESAMPLES} resamples with replacement of the "
                      f"{len(labels)} pooled test clips (seed {BOOTSTRAP_SEED}), predictions fixed; clips "
                      f"treated as independent (clips of one subject are not), so the interval is if anything "
                      f"too narrow; it does not include training variance (run several seeds for that)",
            "confidence": CONFIDENCE,
            **metrics.bootstrap_interval(labels, predictions, clip_set.num_classes, resamples=BOOTSTRAP_RESAMPLES,
                                         confidence=CONFIDENCE, seed=BOOTSTRAP_SEED),
        },
        "chance": {"majority": majority_chance(clip_set, results),
                   "uniform": {"method": "exact expectation of guessing each class with probability 1/C, "
                                         "independently per clip, on the pooled test labels",
                               **metrics.expected_uniform_metrics(labels, clip_set.num_classes)}},
        "fold_mean": pooled["fold_mean"],
        "fold_std": pooled["fold_std"],
        "fold_std_ddof": pooled["fold_std_ddof"],
        "folds": [
            {**fold_metrics, "absent_classes": [class_names[c] for c in fold_metrics["absent_classes"]],
             "selected_epoch": r["selected_epoch"], "training_samples": r["training_samples"],
             "test_subjects": r["test_subjects"], "val_subjects": r["val_subjects"]}
            for fold_metrics, r in zip(pooled["per_fold"], results)
        ],
        "provenance": provenance,
    }
    if results and results[0].get("frozen_prefix"):
        summary["frozen_prefix"] = results[0]["frozen_prefix"]
    if results and "sample_level" in results[0]["test"]:
        sample_level = metrics.pool_folds(
            [(r["test"]["sample_level"]["labels"], r["test"]["sample_level"]["predictions"]) for r in results],
            clip_set.num_classes, names=names)
        summary["sample_level"] = {"name": results[0]["test"]["sample_level"]["name"],
                                   **{k: sample_level[k] for k in ("accuracy", "uf1", "uar", "confusion",
                                                                   "num_samples")}}
    return summary


def stage_summaries(clip_set: ClipSet, stage_results: dict[str, list[dict[str, Any]]], final: str) -> dict[str, Any]:
    """Per stage of a multi-stage run: its pooled test metrics (fold stages) or its training record (run stages).

    Only the last stage's numbers are the run's result; the earlier ones show
    what each stage alone reached on the same test clips.
    """
    summaries = {}
    for name, results in stage_results.items():
        if results and results[0]["test"] is not None:
            pooled = metrics.pool_folds([(r["test"]["labels"], r["test"]["predictions"]) for r in results],
                                        clip_set.num_classes)
            summaries[name] = {key: pooled[key] for key in metrics.SUMMARY_METRICS}
        else:
            summaries[name] = {"trained_once": True, "training_samples": results[0]["training_samples"]}
        summaries[name]["final"] = name == final
        summaries[name]["init"] = results[0].get("init")
    return summaries


def majority_chance(clip_set: ClipSet, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled metrics of predicting, in each fold, the majority class of that fold's training clips.

    The training clips are those of the fold's training subjects (validation
    subjects left out, as in training); ties go to the lower class index. The
    test side is never looked at. Subjects are matched by name, so when two
    databases of the clip set share a subject name the baseline is not given
    (``None`` values and a ``reason``).
    """
    databases_of = collections.defaultdict(set)
    for dataset, subject in zip(clip_set.datasets.tolist(), clip_set.subjects.tolist()):
        databases_of[subject].add(dataset)
    shared = sorted(subject for subject, databases in databases_of.items() if len(databases) > 1)
    if shared:
        return {"accuracy": None, "uf1": None, "uar": None, "classes": None,
                "reason": f"subject name {shared[0]!r} occurs in several databases of the clip set"}
    majority, per_fold = {}, []
    for result in results:
        on_training_side = np.isin(clip_set.subjects, result["train_subjects"])
        majority_class = int(np.argmax(np.bincount(clip_set.labels[on_training_side], minlength=clip_set.num_classes)))
        majority[result["name"]] = clip_set.class_names[majority_class]
        labels = result["test"]["labels"]
        per_fold.append((labels, np.full(len(labels), majority_class)))
    pooled = metrics.pool_folds(per_fold, clip_set.num_classes)
    return {"accuracy": pooled["accuracy"], "uf1": pooled["uf1"], "uar": pooled["uar"], "classes": majority,
            "method": "each fold predicts the majority class of its training clips (ties: lower class index), "
                      "pooled over folds like the model's predictions"}


def format_scores(row: dict[str, Any], keys: Sequence[str] = metrics.SUMMARY_METRICS) -> str:
    return " | ".join("n/a" if row.get(key) is None else f"{row[key]:.4f}" for key in keys)


def format_mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.4f} ± " + ("n/a" if std is None else f"{std:.4f}")


def format_interval(bounds: Sequence[float]) -> str:
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown: pooled metrics with their interval and chance levels, per fold, provenance."""
    mean, std, ddof = summary["fold_mean"], summary["fold_std"], summary["fold_std_ddof"]
    boot, chance = summary["bootstrap"], summary["chance"]
    confidence = f"{100 * boot['confidence']:g} %"
    lines = [
        f"# {summary['experiment']} on {summary['dataset']} ({summary['protocol']}, seed {summary['seed']})",
        "",
        "| | accuracy | UF1 | UAR | clips |",
        "|---|---|---|---|---|",
        f"| pooled over folds | {format_scores(summary)} | {summary['num_clips']} |",
        f"| {confidence} bootstrap interval | "
        + " | ".join(format_interval(boot[key]) for key in metrics.SUMMARY_METRICS) + " | |",
        f"| chance: training-side majority | {format_scores(chance['majority'])} | |",
        f"| chance: uniform guess (expected) | {format_scores(chance['uniform'])} | |",
        f"| mean ± std of folds (ddof={ddof}) | "
        + " | ".join(format_mean_std(mean[key], std[key]) for key in metrics.SUMMARY_METRICS) + " | |",
        f"| same, classes present in each fold's test side | "
        f"| {format_mean_std(mean['uf1_present'], std['uf1_present'])} "
        f"| {format_mean_std(mean['uar_present'], std['uar_present'])} | |",
        "",
        "| fold | accuracy | UF1 | UAR | UF1 (present) | UAR (present) | absent from test | clips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fold in summary["folds"]:
        lines.append(f"| {fold['name']} | {format_scores(fold, metrics.FOLD_METRICS)} "
                     f"| {', '.join(fold['absent_classes']) or '—'} | {fold['num_samples']} |")
    lines += [
        "",
        f"UF1 and UAR average over all {len(summary['classes'])} classes, an absent class counting 0; "
        f"'(present)' averages over the classes with a test clip in that fold only. "
        f"Fold std is the sample std (ddof={ddof}) over {len(summary['folds'])} folds.",
        f"Interval: {boot['method']}.",
        f"Chance: {chance['uniform']['method']}; "
        + (f"majority: {chance['majority']['method']} "
           f"({', '.join(f'{name}: {cls}' for name, cls in chance['majority']['classes'].items())})."
           if chance["majority"]["classes"] is not None else f"majority: not given ({chance['majority']['reason']})."),
    ]
    if summary["absent_classes"]:
        lines.append(f"No test clip at all of: {', '.join(summary['absent_classes'])} (their F1 and recall are 0).")
    if not summary.get("subject_independent", True):
        lines[1:1] = ["", f"**Not subject-independent**: {summary['protocol']} puts clips of one subject on both "
                          f"sides of a fold, so these scores are optimistic next to kfold_by_subject or loso."]
    if "sample_level" in summary:
        level = summary["sample_level"]
        lines += ["", f"{level['name'].capitalize()} level (every test {level['name']} a sample): accuracy "
                      f"{level['accuracy']:.4f}, UF1 {level['uf1']:.4f}, UAR {level['uar']:.4f} over "
                      f"{level['num_samples']} {level['name']}s."]
    if "stages" in summary:
        lines += ["", "| stage | accuracy | UF1 | UAR | starts from |", "|---|---|---|---|---|"]
        for name, stage in summary["stages"].items():
            scores = format_scores(stage) if "uf1" in stage else "trained once, not tested | |"
            init = stage.get("init")
            start = f"{init['from']} ({init['copied_parameters']} parameters copied)" if init else "fresh"
            lines.append(f"| {name}{' (final)' if stage['final'] else ''} | {scores} | {start} |")
    if summary.get("frozen_prefix"):
        prefix = summary["frozen_prefix"]
        line = f"Backbone frozen up to `{prefix['freeze_until']}`"
        if prefix["cached"]:
            line += (f"; its output cached once ({prefix['variants']} versions per clip, {prefix['dtype']}, "
                     f"{prefix['megabytes']} MiB in {prefix['location']}, {prefix['build_seconds']} s"
                     + (", reused from an earlier run)" if prefix.get("reused") else ")"))
        lines += ["", line + "."]
    lines += ["", "Training samples per class (per fold):", ""]
    for fold in summary["folds"]:
        samples = fold["training_samples"]
        line = f"- {fold['name']}: {samples['samples_per_class']}"
        if "balanced_samples_per_class" in samples:
            line += f" → balanced {samples['balanced_samples_per_class']} (multipliers {samples['multipliers']})"
        if samples.get("padded_short_clips"):
            line += f"; {samples['padded_short_clips']} training clips shorter than the window were padded and masked"
        lines.append(line)
    classes = summary["classes"]
    lines += ["", "Confusion (rows true, columns predicted): " + ", ".join(classes), ""]
    lines += ["| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for name, row in zip(classes, summary["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Provenance", ""] + provenance_lib.markdown_lines(summary.get("provenance"))
    return "\n".join(lines) + "\n"


def save_figure(fig: Any, path: str) -> None:
    """Saves ``fig`` as PNG to ``path`` atomically and closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    files.atomic_write_bytes(path, buffer.getvalue())


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str) -> None:
    cm = np.asarray(confusion, np.float64)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(1.2 * len(class_names) + 2, 6), 1.2 * len(class_names) + 2))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{rates[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def figure_title(summary: dict[str, Any]) -> str:
    """'<experiment> on <dataset>' over '<protocol>, seed K': what every figure of a run names (two lines)."""
    return f"{summary['experiment']} on {summary['dataset']}\n{summary['protocol']}, seed {summary['seed']}"


def plot_learning_curves(results: Sequence[dict[str, Any]], path: str, metric: str, title: str) -> None:
    """One line per fold of ``train_<metric>`` (solid) and ``val_<metric>`` (dashed) against epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for index, result in enumerate(results):
        color = f"C{index}"
        epochs = [h["epoch"] + 1 for h in result["history"]]
        for side, style in (("train", "-"), ("val", "--")):
            key = f"{side}_{metric}"
            if result["history"] and key in result["history"][0]:
                ax.plot(epochs, [h[key] for h in result["history"]], style, color=color,
                        label=f"{result['name']} {side}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_results(workdir: str, stem: str, data: dict[str, Any], table: str,
                  figures: Mapping[str, Callable[[str], None]]) -> None:
    """Writes ``STEM.json`` (``data``), ``STEM.md`` (``table``) and each figure, ``figures[name](path)``, at
    ``workdir/name``: atomically, and in a multi-process run only on process 0."""
    if jax.process_index() != 0:
        return
    files.atomic_write_json(os.path.join(workdir, f"{stem}.json"), data)
    files.atomic_write_text(os.path.join(workdir, f"{stem}.md"), table)
    for name, draw in figures.items():
        draw(os.path.join(workdir, name))


def write(workdir: str, summary: dict[str, Any], results: Sequence[dict[str, Any]],
          class_names: Sequence[str]) -> None:
    """Writes summary.json, summary.md, the pooled confusion matrix and the learning curves per fold."""
    title = figure_title(summary)
    figures: dict[str, Callable[[str], None]] = {"confusion.png": functools.partial(
        plot_confusion, summary["confusion"], class_names,
        title=f"{title}\npooled over folds: UF1 {summary['uf1']:.3f}, UAR {summary['uar']:.3f}")}
    for metric in ("loss", "accuracy"):
        figures[f"learning_curve_{metric}.png"] = functools.partial(
            plot_learning_curves, results, metric=metric, title=f"{title}; {metric} per fold")
    write_results(workdir, "summary", summary, markdown(summary), figures)
