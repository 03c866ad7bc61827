"""How every merjax build writes its TFDS files: byte-identical from one build to the next, of any size.

Each builder's ``_download_and_prepare`` runs TFDS inside ``build_writing()``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from tensorflow_datasets.core import example_serializer

from datasets.core.spill import tf_free_spill


@contextlib.contextmanager
def deterministic_serialization() -> Iterator[None]:
    """Makes TFDS write every example's feature map in sorted key order while active.

    TFDS stores an example as a ``tf.train.Example``, whose feature map the upb
    protobuf runtime writes in an order that changes from process to process;
    with sorted keys the same examples give byte-identical files in every process.
    """
    serializer = example_serializer.ExampleSerializer
    original = serializer.serialize_example

    def serialize_sorted(self: example_serializer.ExampleSerializer, example: Any) -> bytes:
        return self.get_tf_example(example).SerializeToString(deterministic=True)

    serializer.serialize_example = serialize_sorted
    try:
        yield
    finally:
        serializer.serialize_example = original


@contextlib.contextmanager
def build_writing() -> Iterator[None]:
    """Sorted feature maps (``deterministic_serialization``) and a TensorFlow-free spill to disk past
    ``spill.MEMORY_LIMIT_BYTES`` (``spill.tf_free_spill``): the same bytes at any dataset size."""
    with deterministic_serialization(), tf_free_spill():
        yield
