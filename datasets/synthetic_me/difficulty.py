"""Measures how hard a ``synthetic_me`` config is: ``python -m datasets.synthetic_me.difficulty [--data_dir=DIR]``.

The data must hide the label from any single frame yet carry it in motion.
This script builds the config if needed, then runs subject-wise k-fold
cross-validation (``merjax.data.protocols.kfold_by_subject``, no validation
subjects, fixed hyperparameters: nothing is tuned on a test fold) of
standardised multinomial logistic regressions (scikit-learn, in merjax's
``test`` extra: ``pip install -e '.[test]'`` or ``pip install scikit-learn``;
without it the script says so in one line) on:

* ``first frame``: the first frame's pixels; must sit near chance;
* ``apex - first``: the signed difference of the apex frame and the first frame;
* ``middle - first``: the same with the middle frame (SMIC's loaders' stand-in for the apex);
* ``mean_t (frame_t - first)``: the mean change over the clip (needs no apex);
* ``max_t abs(frame_t - first)``: the per-pixel largest change over the clip (needs no apex);
* ``landmark motion (oracle)``: the similarity-aligned ground-truth landmark
  displacement at apex, an upper bound that shows the landmarks of later
  frames give the label away (models should use the first frame's only).

Pixels are converted to grey, blurred (sigma 1 px) and area-downscaled to
``--grid`` x ``--grid``. Metrics are computed on the test predictions pooled
over the folds. It also prints how large the expression is against the head
motion, measured on the ground-truth landmarks. ``--data_dir`` defaults to
``$MERJAX_DATA_DIR`` (else ``~/merjax_data``), as ``datasets.build``'s.
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import cv2
import numpy as np

from datasets import build
from datasets.synthetic_me import synthetic_me
from merjax.data import pipeline, protocols
from merjax.errors import UserError
from merjax.train import metrics


def load(dataset_dir: str, config_name: str) -> pipeline.ClipSet:
    """Every clip of the prepared ``synthetic_me/<config_name>`` at its rendered size (``pipeline.load_clips``)."""
    config = next(config for config in synthetic_me.CONFIGS if config.name == config_name)
    return pipeline.load_clips(dataset_dir, config.image_size)


def grey_grid(image: np.ndarray, grid: int) -> np.ndarray:
    """Grey (channel mean), blurred by 1 px and area-downscaled to grid x grid, flattened."""
    grey = image.astype(np.float32).mean(axis=-1) if image.ndim == 3 else image.astype(np.float32)
    return cv2.resize(cv2.GaussianBlur(grey, (0, 0), 1.0), (grid, grid), interpolation=cv2.INTER_AREA).ravel()


def first_frame_features(clips: pipeline.ClipSet, grid: int) -> np.ndarray:
    return np.stack([grey_grid(frames[0], grid) for frames in clips.frames])


def apex_difference_features(clips: pipeline.ClipSet, grid: int) -> np.ndarray:
    return np.stack([grey_grid(frames[apex].astype(np.float32) - frames[0], grid)
                     for frames, apex in zip(clips.frames, clips.apexes)])


def middle_difference_features(clips: pipeline.ClipSet, grid: int) -> np.ndarray:
    """SMIC gives no apex and loaders take the middle frame instead."""
    return np.stack([grey_grid(frames[len(frames) // 2].astype(np.float32) - frames[0], grid)
                     for frames in clips.frames])


def mean_change_features(clips: pipeline.ClipSet, grid: int) -> np.ndarray:
    return np.stack([grey_grid((frames.astype(np.float32) - frames[:1]).mean(axis=0), grid)
                     for frames in clips.frames])


def largest_change_features(clips: pipeline.ClipSet, grid: int) -> np.ndarray:
    return np.stack([grey_grid(np.abs(frames.astype(np.float32) - frames[:1]).max(axis=0), grid)
                     for frames in clips.frames])


def _similarity_to(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2x3) taking ``source`` points onto ``target``."""
    matrix, _ = cv2.estimateAffinePartial2D(source, target, method=cv2.LMEDS)
    return matrix


def _nonrigid_displacement(landmarks: np.ndarray, t: int) -> np.ndarray:
    """Frame ``t``'s landmarks, similarity-aligned onto frame 0, minus frame 0's: [68,2]."""
    matrix = _similarity_to(landmarks[t], landmarks[0])
    return landmarks[t] @ matrix[:, :2].T + matrix[:, 2] - landmarks[0]


def _rigid_displacement(landmarks: np.ndarray, t: int) -> float:
    """Mean distance frame 0's landmarks move under the similarity that best explains frame ``t``."""
    matrix = _similarity_to(landmarks[0], landmarks[t])
    return float(np.linalg.norm(landmarks[0] @ matrix[:, :2].T + matrix[:, 2] - landmarks[0], axis=1).mean())


def landmark_motion_features(clips: pipeline.ClipSet, grid: int) -> np.ndarray:
    return np.stack([_nonrigid_displacement(landmarks, apex).ravel()
                     for landmarks, apex in zip(clips.landmarks, clips.apexes)])


BASELINES: dict[str, Callable[[pipeline.ClipSet, int], np.ndarray]] = {
    "first frame": first_frame_features,
    "apex - first": apex_difference_features,
    "middle - first": middle_difference_features,
    "mean_t (frame_t - first)": mean_change_features,
    "max_t abs(frame_t - first)": largest_change_features,
    "landmark motion (oracle)": landmark_motion_features,
}


def cross_validate(features: np.ndarray, clips: pipeline.ClipSet, folds: Sequence[protocols.Fold]) -> np.ndarray:
    """Test predictions of every example, each from the model of the fold that holds it out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predictions = np.full(len(features), -1)
    for fold in folds:
        model = make_pipeline(StandardScaler(),
                              LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000))
        model.fit(features[fold.train], clips.labels[fold.train])
        predictions[fold.test] = model.predict(features[fold.test])
    return predictions


def scores(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float, float]:
    """Accuracy, UAR (mean per-class recall) and UF1 (macro F1)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return (accuracy_score(labels, predictions), balanced_accuracy_score(labels, predictions),
            f1_score(labels, predictions, average="macro"))


def motion_scale(clips: pipeline.ClipSet) -> dict[str, float]:
    """Medians over clips, in pixels, of the expression (non-rigid) and head-motion sizes."""
    expression, head_at_apex, head_largest = [], [], []
    for landmarks, apex in zip(clips.landmarks, clips.apexes):
        expression.append(np.linalg.norm(_nonrigid_displacement(landmarks, apex), axis=1).max())
        head = [_rigid_displacement(landmarks, t) for t in range(len(landmarks))]
        head_at_apex.append(head[apex])
        head_largest.append(max(head))
    return {"largest non-rigid landmark motion at apex (AU + blink)": float(np.median(expression)),
            "mean landmark motion from head drift at apex": float(np.median(head_at_apex)),
            "mean landmark motion from head drift, largest over the clip": float(np.median(head_largest))}


def check_scikit_learn(command: str = "datasets.synthetic_me.difficulty") -> None:
    """Raises a one-line UserError naming ``command`` and what to install when scikit-learn is missing.

    ``pip install -e .`` does not install it: it is in the ``test`` extra.
    """
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise UserError(f"{command} fits scikit-learn models, which `pip install -e .` does "
                        "not install: pip install scikit-learn (or pip install -e '.[test]')") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic_me.difficulty", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=build.DEFAULT_DATA_DIR,
                        help="TFDS data directory, built there if missing (default: $MERJAX_DATA_DIR, else "
                             "~/merjax_data)")
    parser.add_argument("--config", default="smic_like")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject-to-fold assignment")
    parser.add_argument("--grid", type=int, default=16, help="pixel features are grid x grid")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a user error too")
    args = parser.parse_args(argv)
    with build.user_errors_as_one_line(args.verbose):
        check_scikit_learn()
        if args.grid < 1:
            raise UserError(f"--grid={args.grid}: must be >= 1 (pixel features are grid x grid)")
        if args.folds < 2:
            raise UserError(f"--folds={args.folds}: must be >= 2 (subject-wise folds)")
        report(args)


def report(args: argparse.Namespace) -> None:
    """Builds the config if needed, cross-validates every baseline and prints the table."""
    from sklearn.metrics import f1_score

    dataset_dir = build.ensure_built(f"synthetic_me/{args.config}", args.data_dir)
    clips = load(dataset_dir, args.config)
    try:
        folds = protocols.kfold_by_subject(clips.subjects, clips.labels, k=args.folds, seed=args.seed,
                                           val_subjects=0, class_names=clips.class_names)
    except UserError as error:
        raise UserError(f"--folds={args.folds}: {error}") from error
    counts = np.bincount(clips.labels, minlength=len(clips.class_names))
    print(f"synthetic_me/{args.config}: {len(clips.labels)} clips, {len(set(clips.subjects))} subjects, "
          f"classes {dict(zip(clips.class_names, counts.tolist()))}; {args.folds}-fold by subject "
          f"(seed {args.seed}), logistic regression C=1 balanced, {args.grid}x{args.grid} grey pixels\n")
    print("| features | accuracy | UAR | UF1 |")
    print("|---|---|---|---|")
    print(f"| chance: majority class | {counts.max() / counts.sum():.3f} | {1 / len(counts):.3f} | "
          f"{f1_score(clips.labels, np.full_like(clips.labels, counts.argmax()), average='macro'):.3f} |")
    uniform = metrics.expected_uniform_metrics(clips.labels, len(clips.class_names))
    print(f"| chance: uniform random guess (expected) | {uniform['accuracy']:.3f} | {uniform['uar']:.3f} | "
          f"{uniform['uf1']:.3f} |")
    for name, features in BASELINES.items():
        accuracy, uar, uf1 = scores(clips.labels, cross_validate(features(clips, args.grid), clips, folds))
        print(f"| {name} | {accuracy:.3f} | {uar:.3f} | {uf1:.3f} |")
    print()
    for name, value in motion_scale(clips).items():
        print(f"median {name}: {value:.2f} px")


if __name__ == "__main__":
    main()
