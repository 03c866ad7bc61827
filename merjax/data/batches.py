"""Input pipeline, part 2: samples → the dict batches of the train and eval steps.

The batch contract (every step, every model):

* ``inputs``: exactly the model's keyword inputs (the streams a sampler reads,
  ``mask`` [N] on real frames, ``windows`` for shared-encoding evaluation);
* ``targets``: one entry per target (``label`` [B]; a multi-target model adds
  e.g. per-region targets [B,6]);
* ``weights``: per target, the weight of each sample (the class weight or focal
  α of its target, from the fold's training side), shaped like the target;
* ``masks``: per target, the validity of each prediction (False on a padding
  slot or a padded window).

Nothing reaches the model by not being in a list: the step passes ``inputs``
and only ``inputs``. Training batches are shuffled and augmented by grain with
a seed derived from (seed, epoch), so the batches of an epoch do not depend on
whether the run was resumed. In a multi-process run each process loads only
its rows of every global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np

from merjax.data import augment
from merjax.data.pipeline import ClipSet
from merjax.data.samplers import Sampler
from merjax.rng import derived_seed
from merjax.train import losses

Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Sample-consistent random flip and small rotation (seed 001 §4.2) of every image stream of a sample.

    One flip decision and one angle serve every stream (and every frame) of a
    sample; a flip swaps the streams of each ``mirror_pairs`` entry (e.g. the
    left and right eye regions), so that a mirrored face keeps its anatomy.
    """

    flip_prob: float = 0.5
    max_rotation: float = 10.0
    mirror_pairs: tuple[tuple[str, str], ...] = ()

    @property
    def active(self) -> bool:
        return self.flip_prob > 0 or self.max_rotation > 0

    def __call__(self, streams: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return augment.random_flip_rotate_streams(streams, rng, max_angle=self.max_rotation,
                                                  flip_prob=self.flip_prob, mirror_pairs=self.mirror_pairs)


def local_rows(global_batch_size: int) -> range:
    """The rows of every global batch that this process loads."""
    per_process = global_batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return range(start, start + per_process)


def stack(examples: Sequence[Batch]) -> Batch:
    """Examples (nested dicts of arrays) stacked into one batch along a new leading axis."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *examples)


class ExampleLoader:
    """Turns one training row (clip, start) into an example of the batch contract; a grain random map."""

    def __init__(self, sampler: Sampler, clip_set: ClipSet, targets: Mapping[str, np.ndarray],
                 weight_tables: Mapping[str, np.ndarray]):
        self._sampler = sampler
        self._clip_set = clip_set
        self._targets = targets
        self._weight_tables = weight_tables

    def __call__(self, row: np.ndarray, rng: np.random.Generator) -> Batch:
        clip = int(row[0])
        targets = {name: np.asarray(values[clip]) for name, values in self._targets.items()}
        weights = {name: (losses.sample_weights(value, self._weight_tables[name]) if name in self._weight_tables
                          else np.ones(value.shape, np.float32))
                   for name, value in targets.items()}
        return {"inputs": self._sampler.load_train(self._clip_set, row, rng), "targets": targets,
                "weights": weights, "masks": {name: np.ones(value.shape, bool) for name, value in targets.items()}}


def train_batches(sampler: Sampler, clip_set: ClipSet, rows: np.ndarray, targets: Mapping[str, np.ndarray], *,
                  weight_tables: Mapping[str, np.ndarray], batch_size: int, seed: int, epoch: int,
                  num_threads: int = 2) -> grain.IterDataset:
    """One epoch of shuffled, augmented training batches (the last partial batch is dropped).

    Args:
      rows: the training samples (``sampler.train_rows``), possibly resampled.
      targets: per target, its value for every clip of ``clip_set`` ([num_clips, ...]).
      weight_tables: per target, the class weights ([C], or [K,C] for K columns) put in ``weights``.
      batch_size: the global batch size.
    """
    if len(rows) < batch_size:
        raise ValueError(f"only {len(rows)} training samples for a batch of {batch_size}")
    loaded = (grain.MapDataset.source(rows)
              .shuffle(seed=derived_seed(seed, epoch))
              .random_map(ExampleLoader(sampler, clip_set, targets, weight_tables), seed=derived_seed(seed + 1, epoch)))
    local = local_rows(batch_size)
    batches = grain.MapDataset.range(len(rows) // batch_size).map(
        lambda b: stack([loaded[b * batch_size + r] for r in local]))
    return batches.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4))


def eval_batches(sampler: Sampler, clip_set: ClipSet, clip_indices: np.ndarray, *,
                 batch_size: int) -> Iterator[tuple[Batch, np.ndarray]]:
    """The evaluation samples of ``clip_indices`` in fixed-size batches.

    Yields (this process's rows of the global batch, the clip index of every
    sample of the global batch, -1 for a padding slot). A padding slot repeats
    the first sample's inputs with its prediction mask False.
    """
    rows = sampler.eval_rows(clip_set, clip_indices)
    local = list(local_rows(batch_size))
    for begin in range(0, len(rows), batch_size):
        chunk = rows[begin:begin + batch_size]
        groups = np.full(batch_size, -1, np.int64)
        groups[:len(chunk)] = chunk[:, 0]
        examples = []
        for slot in local:
            inputs, mask = sampler.load_eval(clip_set, chunk[min(slot, len(chunk) - 1)])
            examples.append({"inputs": inputs, "masks": {"label": mask & (slot < len(chunk))}})
        yield stack(examples), groups
