"""Seed 001's choice of l_s by Grad-CAM, measured: ``python -m experiments.gradcam_layers [--config=...:preset]``.

Seed 001 (§4.3) applies Grad-CAM to the layers of the VGGFace2 ResNet-50 and
retrains from the layer l_s "where the highlighted area was closest to the
facial features", freezing the layers before it; its Figure 4 shows the
heatmaps gathering on the eyes, brows, nose wings and mouth corners after
training. This experiment replaces the eyeballing with a score:

1. the Exp-I model (a ResNet on single frames, ``smic_vggface2``'s settings)
   and its initial variables come from ``experiments.cv.compile_run`` (random,
   or the VGGFace2 backbone with ``--config.model.weights``);
2. on one subject-wise fold (``gradcam.fold``, the first by default), Grad-CAM
   of the true class is taken at every candidate layer (``gradcam.layers``) on
   each held-out clip's apex frame (the middle frame where the apex is unknown)
   and scored against the landmark regions of that frame
   (``merjax.interpret.regions``): the fraction of the heatmap's mass inside
   them and its lift over a uniform heatmap;
3. the model is trained on the fold's training subjects exactly as
   ``experiments.cv.run_fold`` trains that fold (same samples, batches and
   seed; the last epoch is kept), and the layers are scored again.

l_s is the candidate with the highest mean lift after training
(``gradcam.select_on='before'``: before it); seed 001 then freezes the layers
before l_s, which is ``--config.train.freeze_until=<the endpoint before l_s>``.
Outputs in the workdir: ``config.json``, ``gradcam_scores.json`` and
``gradcam_grid.png`` (held-out examples x layers, before | after, regions outlined).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import matplotlib
import ml_collections
import numpy as np
from tqdm import tqdm

from experiments import cli, cv
from merjax import interpret
from merjax.data import protocols
from merjax.data.pipeline import ClipSet
from merjax.models import ResNet
from merjax.train.loop import fit

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = ("before", "after")
SELECT_ON = STAGES
# gradcam_grid.png: square panels of PANEL_PIXELS, a header for the title, at DPI.
PANEL_PIXELS = 150
HEADER_PIXELS = 60
DPI = 100


def grid_pixels(num_examples: int, num_layers: int) -> tuple[int, int]:
    """(width, height) of gradcam_grid.png: a frame column, then before | after per layer."""
    return (1 + 2 * num_layers) * PANEL_PIXELS, num_examples * PANEL_PIXELS + HEADER_PIXELS


def heldout_frames(clip_set: ClipSet, clip_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's apex frame, or its middle frame where the apex is unknown: frames [N,S,S,3] uint8
    and their landmarks [N,68,2]."""
    apexes = clip_set.apexes[clip_indices]
    index = np.where(apexes >= 0, apexes, clip_set.lengths[clip_indices] // 2)
    frames = np.stack([clip_set.frames[c][t] for c, t in zip(clip_indices, index)])
    landmarks = np.stack([clip_set.landmarks[c][t] for c, t in zip(clip_indices, index)])
    return frames, landmarks


def batched_gradcam(explain: Callable, variables: Any, frames: np.ndarray, labels: np.ndarray,
                    batch_size: int) -> interpret.GradCAM:
    """``explain(variables, inputs, target)`` over fixed-size chunks (one compilation), on the host."""
    parts = []
    for begin in range(0, len(frames), batch_size):
        chunk_frames, chunk_labels = frames[begin:begin + batch_size], labels[begin:begin + batch_size]
        size = len(chunk_frames)
        padded = np.concatenate([chunk_frames, np.zeros_like(frames[:batch_size - size])])
        result = explain(variables, {"frames": padded},
                         target=np.concatenate([chunk_labels, np.zeros_like(labels[:batch_size - size])]))
        parts.append([np.asarray(x)[:size] for x in result])
    return interpret.GradCAM(*(np.concatenate(xs) for xs in zip(*parts)))


def layer_scores(explainers: Mapping[str, Callable], variables: Any, frames: np.ndarray, labels: np.ndarray,
                 masks: np.ndarray, batch_size: int) -> dict[str, dict[str, np.ndarray]]:
    """Per layer: raw maps [N,h,w], inside fraction and lift [N], and whether the label was predicted [N]."""
    scores = {}
    for layer, explain in explainers.items():
        result = batched_gradcam(explain, variables, frames, labels, batch_size)
        region = interpret.region_scores(interpret.resize_maps(result.maps, masks.shape[1:], normalise=False),
                                         masks)
        scores[layer] = {"maps": result.maps, "inside": np.asarray(region.inside),
                         "lift": np.asarray(region.lift), "correct": result.logits.argmax(-1) == labels}
    return scores


def _mean_std(values: np.ndarray) -> dict[str, Any]:
    """Mean, std and count of the finite values (an all-zero map scores NaN); None when there are none."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {"mean": None, "std": None, "sem": None, "n": 0}
    std = float(finite.std())
    return {"mean": float(finite.mean()), "std": std, "sem": std / np.sqrt(len(finite)), "n": len(finite)}


def summarise(scores: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {"inside_fraction": _mean_std(scores["inside"]), "lift": _mean_std(scores["lift"]),
            "empty_maps": int(np.isnan(scores["inside"]).sum())}


def recommend(layers: Mapping[str, Mapping[str, Any]], select_on: str,
              endpoint_names: Sequence[str]) -> tuple[str, str]:
    """(l_s, freeze_until): the layer of highest mean lift at ``select_on``, and the endpoint before it
    ('' when l_s is the first endpoint: nothing to freeze)."""
    candidates = {layer: s[select_on]["lift"]["mean"] for layer, s in layers.items()
                  if s[select_on]["lift"]["mean"] is not None}
    if not candidates:
        raise ValueError(f"every Grad-CAM map {select_on} training is empty: no layer can be recommended")
    chosen = max(candidates, key=candidates.get)
    position = list(endpoint_names).index(chosen)
    return chosen, endpoint_names[position - 1] if position else ""


def separation(layers: Mapping[str, Mapping[str, Any]], select_on: str, chosen: str) -> dict[str, Any] | None:
    """How clearly ``chosen`` leads the runner-up: the lift difference against two standard errors of it.

    The standard error treats the two layers' frames as independent samples (they are the same
    frames, so this is conservative). None when there is no runner-up.
    """
    others = {layer: s[select_on]["lift"] for layer, s in layers.items()
              if layer != chosen and s[select_on]["lift"]["mean"] is not None}
    if not others:
        return None
    runner_up = max(others, key=lambda layer: others[layer]["mean"])
    best, second = layers[chosen][select_on]["lift"], others[runner_up]
    difference = best["mean"] - second["mean"]
    two_se = 2.0 * float(np.hypot(best["sem"], second["sem"]))
    return {"runner_up": runner_up, "difference": difference, "two_standard_errors": two_se,
            "separated": bool(difference > two_se)}


def train_fold(config: ml_collections.ConfigDict, clip_set: ClipSet, fold: protocols.Fold,
               compiled: cv.Compiled) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains on the fold's training subjects as ``cv.run_fold`` does; returns (variables, record)."""
    seed = int(np.random.SeedSequence([config.seed, config.gradcam.fold]).generate_state(1)[0])
    training = cv.prepare_training(config, clip_set, fold.train, seed, compiled)
    started = time.perf_counter()
    fitted = fit(training.state, train_step=compiled.train_step, train_batches=training.batches,
                 epochs=config.train.epochs,
                 mesh=compiled.mesh, progress=tqdm, description=f"{fold.name} train")
    record = {"epochs": config.train.epochs, "steps_per_epoch": training.steps_per_epoch,
              "samples": training.record,
              "history": fitted.history, "seconds": round(time.perf_counter() - started, 2)}
    variables = jax.device_get({"params": fitted.state.params, "batch_stats": fitted.state.batch_stats})
    return variables, record


def pick_examples(labels: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` indices taking the classes in turn (first examples of each class first)."""
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(count, len(labels)):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(int(queue.pop(0)))
    return np.asarray(picked, np.int64)


def plot_grid(path: str, frames: np.ndarray, masks: np.ndarray, scores: Mapping[str, Mapping[str, Any]],
              row_labels: Sequence[str], title: str) -> None:
    """Rows: examples; columns: the frame with its regions, then per layer the heatmap before | after.

    ``scores[stage][layer]`` holds that stage's maps and lifts for the rows' examples.
    """
    layers = list(scores["before"])
    width, height = grid_pixels(len(frames), len(layers))
    fig, axes = plt.subplots(len(frames), 1 + 2 * len(layers), figsize=(width / DPI, height / DPI), dpi=DPI,
                             squeeze=False, layout="constrained")
    fig.suptitle(title, fontsize=9)
    for row, (frame, mask) in enumerate(zip(frames, masks)):
        panels = [(frame, "apex frame", "")]
        for layer in layers:
            for stage in STAGES:
                lift = scores[stage][layer]["lift"][row]
                panels.append((interpret.overlay(frame, scores[stage][layer]["maps"][row]),
                               f"{layer} {stage}", "empty map" if np.isnan(lift) else f"lift {lift:.2f}"))
        for column, (image, name, caption) in enumerate(panels):
            ax = axes[row, column]
            ax.imshow(image, interpolation="bilinear")
            ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=7, labelpad=1)
            if row == 0:
                ax.set_title(name, fontsize=8)
        axes[row, 0].set_ylabel(row_labels[row], fontsize=7)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Scores the candidate layers before and after training; writes the outputs and returns the summary."""
    started = time.perf_counter()
    if config.model.kind != "frame":
        raise ValueError(f"gradcam_layers scores single frames (Exp-I): model.kind must be 'frame', "
                         f"got {config.model.kind!r}")
    if config.gradcam.select_on not in SELECT_ON:
        raise ValueError(f"gradcam.select_on must be one of {SELECT_ON}, got {config.gradcam.select_on!r}")
    layers = tuple(config.gradcam.layers)
    candidates = interpret.spatial_endpoints(ResNet(stage_sizes=tuple(config.model.backbone.stage_sizes)))
    if not layers or not set(layers) <= set(candidates):
        raise ValueError(f"gradcam.layers {layers} must be spatial endpoints of the backbone: {candidates}")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    clip_set = cv.load_clip_set(config)
    folds = cv.make_folds(config, clip_set)
    if not 0 <= config.gradcam.fold < len(folds):
        raise ValueError(f"gradcam.fold={config.gradcam.fold} but the protocol has {len(folds)} folds")
    fold = folds[config.gradcam.fold]
    compiled = cv.compile_run(config, clip_set, workdir)

    frames, landmarks = heldout_frames(clip_set, fold.test)
    labels = clip_set.labels[fold.test]
    masks = interpret.region_masks(landmarks, config.data.image_size, margin=config.gradcam.margin)
    explainers = {layer: jax.jit(functools.partial(interpret.gradcam, compiled.model, endpoint=layer))
                  for layer in layers}
    score = functools.partial(layer_scores, explainers, frames=frames, labels=labels, masks=masks,
                              batch_size=config.train.eval_batch_size)
    scores = {"before": score(jax.device_get(compiled.variables))}
    trained, training = train_fold(config, clip_set, fold, compiled)
    scores["after"] = score(trained)

    per_layer = {layer: {"map_size": list(scores["before"][layer]["maps"].shape[1:]),
                         **{stage: summarise(scores[stage][layer]) for stage in STAGES}} for layer in layers}
    chosen, freeze_until = recommend(per_layer, config.gradcam.select_on,
                                     compiled.model.backbone.endpoint_names)
    area = masks.mean(axis=(1, 2))
    unknown_apex = int(np.sum(clip_set.apexes[fold.test] < 0))
    summary = {
        "experiment": config.experiment,
        "dataset": clip_set.name,
        "weights": config.model.get("weights", "") or "random initialisation",
        "fold": fold.name,
        "train_subjects": sorted(set(clip_set.subjects[fold.train].tolist())),
        "test_subjects": sorted(set(clip_set.subjects[fold.test].tolist())),
        "heldout": {"clips": len(fold.test), "frame": "apex (middle frame where unknown)",
                    "apex_unknown": unknown_apex},
        "target": "the true label",
        "regions": {"groups": {k: list(v) for k, v in interpret.REGION_GROUPS.items()},
                    "margin_of_interocular_distance": config.gradcam.margin,
                    "area_fraction": {"mean": float(area.mean()), "std": float(area.std())}},
        "apex_accuracy": {stage: float(np.mean(scores[stage][layers[0]]["correct"])) for stage in STAGES},
        "training": training,
        "layers": per_layer,
        "select_on": config.gradcam.select_on,
        "selection": f"the candidate layer with the highest mean lift {config.gradcam.select_on} training",
        "recommended_layer": chosen,
        "separation": separation(per_layer, config.gradcam.select_on, chosen),
        "freeze_until": freeze_until,
        "freeze_flag": f"--config.train.freeze_until={freeze_until}",
    }
    rows = pick_examples(labels, config.gradcam.grid_examples)
    plot_grid(os.path.join(workdir, "gradcam_grid.png"), frames[rows], masks[rows],
              {stage: {layer: {k: scores[stage][layer][k][rows] for k in ("maps", "lift")} for layer in layers}
               for stage in STAGES},
              [f"{clip_set.clip_ids[c]}\n{clip_set.class_names[clip_set.labels[c]]}" for c in fold.test[rows]],
              f"Grad-CAM of the true class, {clip_set.name} {fold.name} held-out apex frames: "
              f"before | after training (regions outlined)")
    summary["seconds"] = round(time.perf_counter() - started, 2)
    with open(os.path.join(workdir, "gradcam_scores.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _cell(stats: Mapping[str, Any]) -> str:
    return "–" if stats["mean"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def markdown(summary: Mapping[str, Any]) -> str:
    """The scores table and the recommendation."""
    lines = [
        (f"Grad-CAM of the true class on {summary['heldout']['clips']} held-out apex frames "
         f"({summary['dataset']}, {summary['fold']}, {summary['weights']}); the regions cover "
         f"{summary['regions']['area_fraction']['mean']:.1%} of the image (lift 1 = uniform)."),
        "",
        "| layer | map | inside before | inside after | lift before | lift after | empty maps before / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer, s in summary["layers"].items():
        lines.append(f"| {layer} | {'×'.join(map(str, s['map_size']))} | {_cell(s['before']['inside_fraction'])} | "
                     f"{_cell(s['after']['inside_fraction'])} | {_cell(s['before']['lift'])} | "
                     f"{_cell(s['after']['lift'])} | {s['before']['empty_maps']} / {s['after']['empty_maps']} |")
    accuracy = summary["apex_accuracy"]
    freeze = (f"`{summary['freeze_flag']}`" if summary["freeze_until"] else "nothing to freeze")
    lines += [
        "",
        (f"Held-out apex-frame accuracy: {accuracy['before']:.3f} before, {accuracy['after']:.3f} after training "
         f"({summary['training']['epochs']} epochs, {summary['training']['seconds']:.0f} s)."),
        (f"**Recommended l_s = {summary['recommended_layer']}** ({summary['selection']}): retrain from "
         f"{summary['recommended_layer']} and freeze the layers before it: {freeze}."),
    ]
    margin = summary["separation"]
    if margin is not None and not margin["separated"]:
        lines.append(
            f"Not separated from {margin['runner_up']}: the lift difference {margin['difference']:.3f} is below two "
            f"standard errors ({margin['two_standard_errors']:.3f}), so these scores do not single out a layer.")
    elif margin is not None:
        lines.append(f"It leads {margin['runner_up']} by {margin['difference']:.3f} lift, more than two standard "
                     f"errors ({margin['two_standard_errors']:.3f}).")
    return "\n".join(lines)


if __name__ == "__main__":
    cli.main("gradcam_layers", lambda config, workdir: markdown(run(config, workdir)))
