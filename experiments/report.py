"""Reports of a cross-validation run: summary.json, summary.md and figures."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from merjax.data.pipeline import ClipSet  # noqa: E402
from merjax.train import metrics  # noqa: E402


def summarize(config: ml_collections.ConfigDict, clip_set: ClipSet, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pools the folds' test predictions: accuracy, UF1, UAR and confusion over all folds."""
    names = [r["name"] for r in results]
    pooled = metrics.pool_folds([(r["test"]["labels"], r["test"]["predictions"]) for r in results],
                                clip_set.num_classes, names=names)
    summary = {
        "experiment": config.experiment,
        "dataset": clip_set.name,
        "classes": list(clip_set.class_names),
        "protocol": config.protocol.kind,
        "seed": config.seed,
        "accuracy": pooled["accuracy"],
        "uf1": pooled["uf1"],
        "uar": pooled["uar"],
        "confusion": pooled["confusion"],
        "num_clips": pooled["num_samples"],
        "fold_mean": pooled["fold_mean"],
        "fold_std": pooled["fold_std"],
        "folds": [
            {**fold_metrics, "selected_epoch": r["selected_epoch"], "training_samples": r["training_samples"],
             "test_subjects": r["test_subjects"], "val_subjects": r["val_subjects"]}
            for fold_metrics, r in zip(pooled["per_fold"], results)
        ],
    }
    if results and results[0].get("frozen_prefix"):
        summary["frozen_prefix"] = results[0]["frozen_prefix"]
    if config.model.kind == "frame":
        frame_level = metrics.pool_folds(
            [(r["test"]["frame_labels"], r["test"]["frame_predictions"]) for r in results],
            clip_set.num_classes, names=names)
        summary["frame_level"] = {k: frame_level[k] for k in ("accuracy", "uf1", "uar", "confusion", "num_samples")}
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a markdown table: pooled metrics, then one row per fold."""
    lines = [
        f"# {summary['experiment']} on {summary['dataset']} ({summary['protocol']}, seed {summary['seed']})",
        "",
        "| | accuracy | UF1 | UAR | clips |",
        "|---|---|---|---|---|",
        f"| pooled over folds | {summary['accuracy']:.4f} | {summary['uf1']:.4f} | {summary['uar']:.4f} "
        f"| {summary['num_clips']} |",
        f"| mean ± std of folds | {summary['fold_mean']['accuracy']:.4f} ± {summary['fold_std']['accuracy']:.4f} "
        f"| {summary['fold_mean']['uf1']:.4f} ± {summary['fold_std']['uf1']:.4f} "
        f"| {summary['fold_mean']['uar']:.4f} ± {summary['fold_std']['uar']:.4f} | |",
    ]
    for fold in summary["folds"]:
        lines.append(f"| {fold['name']} | {fold['accuracy']:.4f} | {fold['uf1']:.4f} | {fold['uar']:.4f} "
                     f"| {fold['num_samples']} |")
    if "frame_level" in summary:
        frame = summary["frame_level"]
        lines += ["", f"Frame level (every test frame a sample): accuracy {frame['accuracy']:.4f}, "
                      f"UF1 {frame['uf1']:.4f}, UAR {frame['uar']:.4f} over {frame['num_samples']} frames."]
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
    return "\n".join(lines) + "\n"


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str) -> None:
    cm = np.asarray(confusion, np.float64)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_learning_curves(results: Sequence[dict[str, Any]], path: str, metric: str) -> None:
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
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(workdir: str, summary: dict[str, Any], results: Sequence[dict[str, Any]],
          class_names: Sequence[str]) -> None:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(markdown(summary))
    plot_confusion(summary["confusion"], class_names, os.path.join(workdir, "confusion.png"),
                   f"{summary['experiment']}: pooled over folds")
    for metric in ("loss", "accuracy"):
        plot_learning_curves(results, os.path.join(workdir, f"learning_curve_{metric}.png"), metric)
