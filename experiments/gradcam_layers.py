"""Seed 001's choice of l_s by Grad-CAM, per fold and with no test subject: ``python -m experiments.gradcam_layers``.

Seed 001 (§4.3) applies Grad-CAM to the layers of the VGGFace2 ResNet-50 and
retrains from the layer l_s "where the highlighted area was closest to the
facial features", freezing the layers before it; its Figure 4 shows the
heatmaps gathering on the eyes, brows, nose wings and mouth corners after
training. This experiment replaces the eyeballing with a score, and makes the
choice once per outer fold of the cross-validation (the folds of
``experiments.cv.make_folds`` for the same data, protocol and seed), from that
fold's training side only:

1. the Exp-I model (a ResNet on single frames, ``smic_vggface2``'s settings)
   and its initial variables come from ``experiments.cv.setup_stage`` (random,
   or the VGGFace2 backbone with ``--config.model.weights``);
2. the fold's training-side subjects (its ``train`` and ``val`` subjects) are
   split by subject into ``gradcam.inner_k`` inner folds
   (``protocols.kfold_by_subject``, class-balanced, seeded by the seed and the
   fold); for the first ``gradcam.inner_folds`` of them the model is trained on
   the other training-side subjects (``cv.prepare_training``, last epoch kept)
   and the held-out ones are the *selection subjects*;
3. Grad-CAM of the true class is taken at every candidate layer
   (``gradcam.layers``) on each selection clip's apex frame (the middle frame
   where the apex is unknown), before and after training, and scored against
   the landmark regions of that frame (``merjax.faces.regions.hull_mask``): the
   fraction of the heatmap's mass inside them and its lift over a uniform heatmap.

A fold's l_s is the candidate with the highest mean lift after training
(``gradcam.select_on='before'``: before it); seed 001 then freezes the layers
before l_s. No subject that a fold tests takes part in its choice, so
``gradcam_scores.json`` can feed every fold its own frozen prefix
(``--config.train.freeze_from=gradcam_scores.json``, read by
``experiments.layer_choice``).

``gradcam.score_on='test (leaks)'`` instead trains on each fold's training
subjects as ``cv.run_stage_fold`` does and scores its *test* subjects, as the seed
most likely did; it is there to compare with, and ``experiments.layer_choice``
refuses its output.

Outputs in the workdir: ``gradcam_scores.json`` (per fold: scores, recommendation,
selection and test subjects; the stamp of what it was computed on) and
``gradcam_grid_<fold>.png`` (selection examples x layers, before | after, regions outlined).
"""

from __future__ import annotations

import collections
import functools
import os
import re
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import matplotlib
import ml_collections
import numpy as np
from tqdm import tqdm

from experiments import cli, cv, layer_choice
from merjax import files, interpret
from merjax.data import protocols
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError
from merjax.faces import regions
from merjax.rng import derived_seed
from merjax.models import registry
from merjax.train.loop import fit

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = ("before", "after")
SELECT_ON = STAGES
# gradcam_grid_<fold>.png: square panels of PANEL_PIXELS, a header for the title, at DPI.
PANEL_PIXELS = 150
HEADER_PIXELS = 60
DPI = 100
SCORE_KEYS = ("maps", "inside", "lift", "correct")


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


def parse_folds(setting: str) -> list[int] | None:
    """``gradcam.folds``: None for 'all', else the fold indices it lists ('0' or '0,2')."""
    text = str(setting).strip()
    if text == "all":
        return None
    try:
        indices = [int(part) for part in text.strip("()[] ").split(",") if part.strip()]
    except ValueError:
        indices = []
    if not indices or len(set(indices)) != len(indices) or min(indices) < 0:
        raise UserError(f"gradcam.folds={setting!r} must be 'all' or distinct fold indices such as '0' or '0,2'")
    return indices


def fold_indices(setting: str, num_folds: int) -> list[int]:
    """The outer folds that ``gradcam.folds`` names, checked against the protocol's ``num_folds``."""
    indices = parse_folds(setting)
    if indices is None:
        return list(range(num_folds))
    if max(indices) >= num_folds:
        raise UserError(f"gradcam.folds={setting!r}: fold {max(indices)} does not exist; the protocol has "
                        f"{num_folds} folds (0..{num_folds - 1})")
    return indices


def selection_splits(config: ml_collections.ConfigDict, clip_set: ClipSet, fold: protocols.Fold,
                     fold_index: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(clips to train on, clips to score, training seed) for each model that scores the layers of ``fold``.

    Leak-free (``gradcam.score_on='selection'``): the fold's training side (``train`` and ``val``
    subjects) split into ``gradcam.inner_k`` subject-wise inner folds; for each of the first
    ``gradcam.inner_folds``, train on its training subjects and score its held-out ones.
    ``'test (leaks)'``: train on ``fold.train`` with ``cv.run_stage_fold``'s seed and score ``fold.test``.
    """
    if config.gradcam.score_on == layer_choice.SCORE_ON_TEST:
        return [(fold.train, fold.test, derived_seed(config.seed, fold_index))]
    side = np.union1d(fold.train, fold.val)
    keys = protocols.subject_keys(clip_set.datasets[side], clip_set.subjects[side])
    try:
        inner = protocols.kfold_by_subject(keys, clip_set.labels[side], config.gradcam.inner_k,
                                           derived_seed(config.seed, fold_index, 0), val_subjects=0,
                                           num_classes=clip_set.num_classes)
    except ValueError as error:
        raise UserError(f"gradcam.inner_k={config.gradcam.inner_k}: cannot split the {len(set(keys))} "
                        f"training-side subjects of {fold.name} ({error}); lower gradcam.inner_k") from None
    return [(side[f.train], side[f.test], derived_seed(config.seed, fold_index, 1, j))
            for j, f in enumerate(inner[:config.gradcam.inner_folds])]


def train_model(config: ml_collections.ConfigDict, clip_set: ClipSet, clip_indices: np.ndarray, seed: int,
                setup: cv.StageSetup, description: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains on ``clip_indices`` as ``cv.run_stage_fold`` trains a fold (last epoch kept); returns (variables,
    record)."""
    training = cv.prepare_training(setup, clip_indices, seed)
    started = time.perf_counter()
    fitted = fit(training.state, train_step=setup.steps.train_step, train_batches=training.batches,
                 epochs=config.train.epochs, mesh=setup.mesh, progress=tqdm, description=description)
    record = {"clips": len(clip_indices), "epochs": config.train.epochs,
              "steps_per_epoch": training.steps_per_epoch, "samples": training.record,
              "history": fitted.history, "seconds": round(time.perf_counter() - started, 2)}
    variables = jax.device_get({"params": fitted.state.params, "batch_stats": fitted.state.batch_stats})
    return variables, record


def subjects_of(clip_set: ClipSet, clip_indices: np.ndarray) -> list[str]:
    """The subjects of the clips; ``<dataset>/<subject>`` when the clip set combines databases."""
    if len(set(clip_set.datasets.tolist())) == 1:
        return sorted(set(clip_set.subjects[clip_indices].tolist()))
    return sorted(set(protocols.subject_keys(clip_set.datasets[clip_indices],
                                             clip_set.subjects[clip_indices]).tolist()))


def score_fold(config: ml_collections.ConfigDict, clip_set: ClipSet, fold: protocols.Fold, fold_index: int,
               setup: cv.StageSetup, explainers: Mapping[str, Callable]) -> dict[str, Any]:
    """Scores the candidate layers for one outer fold before and after training.

    Returns the scored clips, their region masks, the clips the models were trained on, the
    per-stage per-layer score arrays (pooled over the models of ``selection_splits``) and the
    training records.
    """
    initial = jax.device_get(setup.variables)
    scored, trained_on, masks, records, parts = [], [], [], [], []
    for j, (train_clips, score_clips, seed) in enumerate(selection_splits(config, clip_set, fold, fold_index)):
        frames, landmarks = heldout_frames(clip_set, score_clips)
        split_masks = regions.hull_masks(landmarks, (config.data.image_size,) * 2, margin=config.gradcam.margin)
        score = functools.partial(layer_scores, explainers, frames=frames, labels=clip_set.labels[score_clips],
                                  masks=split_masks, batch_size=config.train.eval_batch_size)
        before = score(initial)
        trained, record = train_model(config, clip_set, train_clips, seed, setup,
                                      f"{fold.name} model {j + 1} train")
        parts.append({"before": before, "after": score(trained)})
        scored.append(score_clips)
        trained_on.append(train_clips)
        masks.append(split_masks)
        records.append({"trained_on_subjects": subjects_of(clip_set, train_clips),
                        "scored_subjects": subjects_of(clip_set, score_clips), **record})
    scores = {stage: {layer: {key: np.concatenate([part[stage][layer][key] for part in parts])
                              for key in SCORE_KEYS} for layer in explainers} for stage in STAGES}
    return {"clips": np.concatenate(scored), "training_clips": np.unique(np.concatenate(trained_on)),
            "masks": np.concatenate(masks), "scores": scores, "training": records}


def fold_summary(config: ml_collections.ConfigDict, clip_set: ClipSet, fold: protocols.Fold,
                 scored: Mapping[str, Any], endpoint_names: Sequence[str]) -> dict[str, Any]:
    """One fold's entry of gradcam_scores.json: its recommendation, what it was scored on, the scores."""
    clips, scores, layers = scored["clips"], scored["scores"], tuple(config.gradcam.layers)
    per_layer = {layer: {"map_size": list(scores["before"][layer]["maps"].shape[1:]),
                         **{stage: summarise(scores[stage][layer]) for stage in STAGES}} for layer in layers}
    chosen, freeze_until = recommend(per_layer, config.gradcam.select_on, endpoint_names)
    area = scored["masks"].mean(axis=(1, 2))
    return {
        "recommended_layer": chosen,
        "freeze_until": freeze_until,
        "separation": separation(per_layer, config.gradcam.select_on, chosen),
        "selection_subjects": subjects_of(clip_set, clips),
        "test_subjects": subjects_of(clip_set, fold.test),
        "selection_clips": clip_set.clip_ids[clips].tolist(),
        "training_clips": clip_set.clip_ids[scored["training_clips"]].tolist(),
        "heldout": {"clips": len(clips), "frame": "apex (middle frame where unknown)",
                    "apex_unknown": int(np.sum(clip_set.apexes[clips] < 0))},
        "area_fraction": {"mean": float(area.mean()), "std": float(area.std())},
        "apex_accuracy": {stage: float(np.mean(scores[stage][layers[0]]["correct"])) for stage in STAGES},
        "layers": per_layer,
        "training": scored["training"],
    }


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


def check_settings(config: ml_collections.ConfigDict) -> None:
    """Refuses settings this experiment cannot run, before any work."""
    if config.model.name != "frame_classifier":
        raise UserError(f"gradcam_layers scores single frames (Exp-I): model.name must be 'frame_classifier', "
                        f"got {config.model.name!r}")
    for key in ("freeze_until", "freeze_from"):
        if config.train.get(key):
            raise UserError(f"gradcam_layers chooses the frozen prefix, so it trains the whole network: "
                            f"train.{key} must be '', got {config.train[key]!r}")
    if config.get("seeds"):
        raise UserError(f"gradcam_layers runs one seed, got seeds={tuple(config.seeds)}: run it once per seed "
                        f"(--config.seed=K --workdir=DIR/seed_K)")
    if config.gradcam.select_on not in SELECT_ON:
        raise UserError(f"gradcam.select_on must be one of {SELECT_ON}, got {config.gradcam.select_on!r}")
    if config.gradcam.score_on not in layer_choice.SCORE_ON:
        raise UserError(f"gradcam.score_on must be one of {layer_choice.SCORE_ON}, got {config.gradcam.score_on!r}")
    if config.gradcam.inner_k < 2:
        raise UserError(f"gradcam.inner_k must be >= 2 (inner subject folds of a fold's training side), "
                        f"got {config.gradcam.inner_k}")
    if not 1 <= config.gradcam.inner_folds <= config.gradcam.inner_k:
        raise UserError(f"gradcam.inner_folds must be in 1..gradcam.inner_k={config.gradcam.inner_k}, "
                        f"got {config.gradcam.inner_folds}")
    parse_folds(config.gradcam.folds)
    layers = tuple(config.gradcam.layers)
    candidates = interpret.spatial_endpoints(registry.create_backbone(config.model))
    if not layers or not set(layers) <= set(candidates):
        raise UserError(f"gradcam.layers {layers} must be spatial endpoints of the backbone: {candidates}")


def file_name(fold_name: str) -> str:
    """A fold name usable in a file name (composite LOSO folds are named ``loso_<dataset>/<subject>``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", fold_name)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Chooses l_s for each fold of ``gradcam.folds``; writes the outputs and returns the summary."""
    from experiments import pretrain   # imports experiments.cv

    started = time.perf_counter()
    config = pretrain.with_weights_resolved(config)   # as cv.run: the same resolved file in both runs' records
    check_settings(config)
    leaks = config.gradcam.score_on == layer_choice.SCORE_ON_TEST
    layers = tuple(config.gradcam.layers)
    os.makedirs(workdir, exist_ok=True)
    clip_set = cv.load_clip_set(config)
    folds = cv.make_folds(config, clip_set)
    indices = fold_indices(config.gradcam.folds, len(folds))
    setup = cv.setup_stage(config, clip_set, workdir)
    explainers = {layer: jax.jit(functools.partial(interpret.gradcam, setup.model, endpoint=layer))
                  for layer in layers}
    scored_on = ("each fold's test subjects, as seed 001 most likely did (leaks: for comparison only)" if leaks
                 else f"held-out training-side subjects of each fold: {config.gradcam.inner_folds} of "
                      f"{config.gradcam.inner_k} subject-wise inner folds of its train + val subjects")
    per_fold = {}
    for index in indices:
        fold, fold_started = folds[index], time.perf_counter()
        scored = score_fold(config, clip_set, fold, index, setup, explainers)
        per_fold[fold.name] = {"index": index, **fold_summary(config, clip_set, fold, scored,
                                                              setup.model.backbone.endpoint_names)}
        rows = pick_examples(clip_set.labels[scored["clips"]], config.gradcam.grid_examples)
        plot_grid(os.path.join(workdir, f"gradcam_grid_{file_name(fold.name)}.png"), heldout_frames(
                      clip_set, scored["clips"][rows])[0], scored["masks"][rows],
                  {stage: {layer: {k: scored["scores"][stage][layer][k][rows] for k in ("maps", "lift")}
                           for layer in layers} for stage in STAGES},
                  [f"{clip_set.clip_ids[c]}\n{clip_set.class_names[clip_set.labels[c]]}"
                   for c in scored["clips"][rows]],
                  f"{clip_set.name}, {fold.name}, seed {config.seed}: Grad-CAM of the true class on "
                  f"{'TEST (leaks)' if leaks else 'held-out training-side'} apex frames, before | after "
                  f"training (regions outlined)")
        per_fold[fold.name]["seconds"] = round(time.perf_counter() - fold_started, 2)
    path = os.path.abspath(os.path.join(workdir, "gradcam_scores.json"))
    summary = {
        "experiment": config.experiment,
        "dataset": clip_set.name,
        "weights": config.model.get("weights", "") or "random initialisation",
        "target": "the true label",
        "score_on": config.gradcam.score_on,
        "scored_on": scored_on,
        "regions": {"groups": {k: list(v) for k, v in regions.FEATURE_GROUPS.items()},
                    "margin_of_interocular_distance": config.gradcam.margin},
        "select_on": config.gradcam.select_on,
        "selection": f"the candidate layer with the highest mean lift {config.gradcam.select_on} training",
        "folds": per_fold,
        "agreement": dict(collections.Counter(f["recommended_layer"] for f in per_fold.values()).most_common()),
        "freeze_from_flag": None if leaks else f"--config.train.freeze_from={path}",
        "stamp": layer_choice.stamp(config, clip_set, [folds[i] for i in indices]),
        "seconds": round(time.perf_counter() - started, 2),
    }
    files.atomic_write_json(path, summary)
    return summary


def _mean(stats: Mapping[str, Any]) -> str:
    return "–" if stats["mean"] is None else f"{stats['mean']:.2f}"


def markdown(summary: Mapping[str, Any]) -> str:
    """One row per fold: the lifts before → after, the chosen l_s and freeze_until; then the flag to use."""
    folds = summary["folds"]
    layers = list(next(iter(folds.values()))["layers"])
    lines = [
        (f"Grad-CAM of the true class ({summary['dataset']}, {summary['weights']}) on the apex frames of "
         f"{summary['scored_on']}. Mean lift of the heatmap over the landmark regions (1 = uniform), "
         f"before → after training; l_s = the highest mean lift {summary['select_on']} training."),
        "",
        "| fold | scored subjects (frames) | " + " | ".join(layers) + " | l_s | freeze_until | apex accuracy |",
        "|---" * (5 + len(layers)) + "|",
    ]
    for name, fold in folds.items():
        cells = [f"{_mean(fold['layers'][layer]['before']['lift'])} → {_mean(fold['layers'][layer]['after']['lift'])}"
                 for layer in layers]
        accuracy = fold["apex_accuracy"]
        lines.append(f"| {name} | {', '.join(fold['selection_subjects'])} ({fold['heldout']['clips']}) | "
                     f"{' | '.join(cells)} | **{fold['recommended_layer']}** | {fold['freeze_until'] or '(none)'} | "
                     f"{accuracy['before']:.3f} → {accuracy['after']:.3f} |")
    lines.append("")
    for name, fold in folds.items():
        margin = fold["separation"]
        if margin is not None and not margin["separated"]:
            lines.append(f"- {name}: {fold['recommended_layer']} is not separated from {margin['runner_up']} "
                         f"(lift difference {margin['difference']:.3f} < two standard errors "
                         f"{margin['two_standard_errors']:.3f}).")
        elif margin is not None:
            lines.append(f"- {name}: {fold['recommended_layer']} leads {margin['runner_up']} by "
                         f"{margin['difference']:.3f} lift, more than two standard errors "
                         f"({margin['two_standard_errors']:.3f}).")
    seconds = sum(record["seconds"] for fold in folds.values() for record in fold["training"])
    choices = ", ".join(f"{layer} ({count} of {len(folds)} folds)" for layer, count in summary["agreement"].items())
    lines += ["", f"Choices: {choices}; training took {seconds:.0f} s of {summary['seconds']:.0f} s."]
    if summary["freeze_from_flag"]:
        lines.append(f"Each fold of the cross-validation freezes its own prefix: `{summary['freeze_from_flag']}`.")
    else:
        lines.append(f"**These layers were scored on the folds' test subjects** (gradcam.score_on="
                     f"{summary['score_on']!r}): for comparison only; `--config.train.freeze_from` refuses this file.")
    return "\n".join(lines)


if __name__ == "__main__":
    cli.main("gradcam_layers", lambda config, workdir: markdown(run(config, workdir)))
