"""Linear probe of a backbone's frozen features: how much of the micro-expression they carry.

Seed 001 freezes a pretrained backbone up to l_s and trains only what follows, so
what the frozen prefix hands on bounds what the trainable part can learn. This
measures it without training the backbone: for every clip, the backbone's
features at an endpoint (flattened) of the apex frame minus those of the first
frame — the subject's appearance is in both and cancels, the change, the
expression, is left — go into a standardised logistic regression (C=0.1,
class-balanced), cross-validated over the experiment's subject folds
(``experiments.cv.make_folds``: each fold's training and validation subjects
train the probe, its test subjects are predicted). The table gives UF1 and
accuracy pooled over the folds' test predictions. A linear probe says what the
frozen features make linearly available; a fine-tuned backbone or a nonlinear
head may get more.

The clips are those of seed 001's ``smic_vggface2`` config (``--preset``;
'default': ``synthetic_me/smic_like`` and the ResNet-50 topology at width 8)
loaded at ``--image_size`` and NOT time-resampled (``data.clip_ops=()``): the
first and apex frames as recorded. Each ``--weights`` entry is set as
``--config.model.weights`` and resolved as a run resolves it:

* ``random`` (or ''): the model's random initialisation (params from ``--seed``);
* a path: a backbone file (``merjax.models.registry.import_backbone_weights``);
* ``pretrained:synthetic_faces[:PRESET]``: the synthetic pretraining of this
  backbone at this input size (``experiments.pretrain.ensure_weights``: cached
  under the data dir, trained on first use, which takes minutes).

    python -m benchmarks.feature_probe [--image_size 48] [--weights random pretrained:synthetic_faces FILE.msgpack]
        [--endpoints layer2 layer3 pooled] [--seed 0] [--preset default] [--dataset synthetic_me/smic_like]

Needs scikit-learn, which is in merjax's ``test`` extra (``pip install -e '.[test]'``); without it the command
says so in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from datasets import build
from datasets.synthetic_me.difficulty import check_scikit_learn
from experiments import cv, pretrain
from experiments.configs import seed001
from experiments.configs.validate import validate
from merjax.data.pipeline import ClipSet
from merjax.data.protocols import Fold
from merjax.errors import UserError
from merjax.models import registry
from merjax.train import metrics

RANDOM = ("", "random")          # --weights values for the model's random initialisation
PROBE_C = 0.1                    # inverse L2 strength of the logistic regression
PROBE_MAX_ITER = 2000
FRAME_BATCH = 64                 # frames per backbone call


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: the probe of one endpoint's features under one set of weights."""

    weights: str
    image_size: int
    endpoint: str
    dim: int
    uf1: float
    accuracy: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feature_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=["random", pretrain.WEIGHTS_SPEC],
                        help="'random' (or ''), a backbone file, or pretrained:synthetic_faces[:PRESET]; "
                             "one table block each")
    parser.add_argument("--endpoints", nargs="+", default=["layer2", "layer3", "pooled"],
                        help="backbone endpoints whose (flattened) features are probed")
    parser.add_argument("--image_size", type=int, default=None, help="input side in pixels (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject folds and of the random init")
    parser.add_argument("--preset", default="default", help="seed 001 preset (experiments/configs/seed001.py)")
    parser.add_argument("--dataset", default=None, help="data.name (default: the preset's)")
    parser.add_argument("--data_dir", default=None, help="data.data_dir (default: the config's, ~/merjax_data)")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a user error too")
    return parser.parse_args(argv)


def probe_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """Seed 001's frame-classifier config for ``--preset`` with the flags' data, size and seed, clips not
    time-resampled and no weights yet (``weights_config`` sets them)."""
    config = seed001.config("smic_vggface2", args.preset, frames=True)
    config.data.clip_ops = ()
    config.model.weights = ""
    config.seed = args.seed
    if args.image_size is not None:
        config.data.image_size = args.image_size
    if args.dataset is not None:
        config.data.name = args.dataset
    if args.data_dir is not None:
        config.data.data_dir = args.data_dir
    validate(config)
    return config


def weights_config(config: ml_collections.ConfigDict, weights: str) -> ml_collections.ConfigDict:
    """``config`` with ``model.weights`` set to a ``--weights`` value, checked and resolved as ``cv.run`` does
    (a pretraining spec becomes its file, pretrained first when missing)."""
    config = config.copy_and_resolve_references()
    config.model.weights = "" if weights in RANDOM else weights
    validate(config)
    return pretrain.with_weights_resolved(config)


@functools.partial(jax.jit, static_argnums=0)
def random_variables(model: Any, key: jax.Array, frames: np.ndarray) -> Any:
    """The model's random initialisation, params from ``key`` (jitted: the values of eager ``model.init``, in a
    fraction of its time; compiled once per model)."""
    return model.init({"params": key}, frames=frames, train=False)


def with_weights(config: ml_collections.ConfigDict, variables: Any) -> Any:
    """``variables`` with the backbone's replaced by the file ``config.model.weights`` names, if any (as
    ``cv.initial_variables`` does)."""
    if config.model.weights:
        return registry.import_backbone_weights(config.model, variables, config.model.weights)
    return variables


def key_frames(clip_set: ClipSet) -> tuple[np.ndarray, np.ndarray]:
    """Every clip's first and apex frames, [clips,H,W,3] each.

    Raises:
      UserError: naming the first clip without a known apex.
    """
    unknown = np.flatnonzero(clip_set.apexes < 0)
    if unknown.size:
        raise UserError(f"{clip_set.name}: clip {clip_set.clip_ids[unknown[0]]} (and {unknown.size - 1} more) has "
                        f"no apex frame; the probe needs a dataset with apexes (--dataset)")
    first = np.stack([frames[0] for frames in clip_set.frames])
    apex = np.stack([frames[a] for frames, a in zip(clip_set.frames, clip_set.apexes)])
    return first, apex


@functools.partial(jax.jit, static_argnums=(0, 3))
def _endpoint_output(model: Any, variables: Any, frames: np.ndarray, endpoint: str) -> jax.Array:
    return model.apply(variables, frames, endpoint, method=model.frame_features)


def endpoint_features(model: Any, variables: Any, frames: np.ndarray, endpoint: str) -> np.ndarray:
    """The backbone's ``endpoint`` output for ``frames`` [N,H,W,3] (BatchNorm on running statistics), in batches
    of ``FRAME_BATCH``, flattened to [N,D]."""
    batches = [frames[i:i + FRAME_BATCH] for i in range(0, len(frames), FRAME_BATCH)]
    return np.concatenate([np.asarray(_endpoint_output(model, variables, batch, endpoint)).reshape(len(batch), -1)
                           for batch in batches])


def probe(features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold], num_classes: int) -> dict[str, Any]:
    """Pooled metrics (``metrics.pool_folds``) of a standardised logistic regression fitted per fold on its
    training and validation clips and tested on its test clips."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    per_fold = []
    for fold in folds:
        train = np.union1d(fold.train, fold.val)
        scaler = StandardScaler().fit(features[train])
        classifier = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER, class_weight="balanced").fit(
            scaler.transform(features[train]), labels[train])
        per_fold.append((labels[fold.test], classifier.predict(scaler.transform(features[fold.test]))))
    return metrics.pool_folds(per_fold, num_classes)


def check_endpoints(config: ml_collections.ConfigDict, endpoints: Sequence[str]) -> None:
    """Raises a UserError naming the first of ``endpoints`` the configured backbone does not have."""
    available = registry.backbone_endpoints(config.model)
    for endpoint in endpoints:
        if endpoint not in available:
            raise UserError(f"--endpoints {endpoint}: not an endpoint of the {config.model.backbone.name!r} "
                            f"backbone; choose from {available}")


def measure(configs: dict[str, ml_collections.ConfigDict], clip_set: ClipSet,
            endpoints: Sequence[str]) -> list[Row]:
    """The table's rows for ``configs`` (a ``--weights`` value -> its ``weights_config``), weights by weights and
    endpoint by endpoint."""
    first_config = next(iter(configs.values()))
    folds = cv.make_folds(first_config, clip_set)
    model = registry.create_model(first_config.model, clip_set.num_classes)
    first, apex = key_frames(clip_set)
    initial = random_variables(model, jax.random.key(first_config.seed), first[:1])
    rows = []
    for weights, config in configs.items():
        variables = with_weights(config, initial)
        for endpoint in endpoints:
            change = (endpoint_features(model, variables, apex, endpoint)
                      - endpoint_features(model, variables, first, endpoint))
            scores = probe(change, clip_set.labels, folds, clip_set.num_classes)
            rows.append(Row(weights or "random", config.data.image_size, endpoint, change.shape[1],
                            scores["uf1"], scores["accuracy"]))
    return rows


def markdown(rows: Sequence[Row]) -> str:
    lines = ["| weights | input | endpoint | feature dim | UF1 | accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {row.weights} | {row.image_size}² | {row.endpoint} | {row.dim} | {row.uf1:.3f} | "
              f"{row.accuracy:.3f} |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with build.user_errors_as_one_line(args.verbose):
        check_scikit_learn("benchmarks.feature_probe")
        config = probe_config(args)
        check_endpoints(config, args.endpoints)
        configs = {weights: weights_config(config, weights) for weights in args.weights}
        clip_set = cv.load_clip_set(config)
        rows = measure(configs, clip_set, args.endpoints)
    print(f"{clip_set.name}: {len(clip_set)} clips at {config.data.image_size}², apex - first frame features; "
          f"logistic regression C={PROBE_C} balanced over {config.protocol.kind} folds (seed {config.seed}), "
          f"pooled test predictions\n")
    print(markdown(rows))
    for weights, resolved in configs.items():
        if resolved.model.weights:
            print(f"\n{weights or 'random'}: {resolved.model.weights}")


if __name__ == "__main__":
    main()
