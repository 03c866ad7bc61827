"""Data parallelism over all local devices with ``jax.sharding``.

One 1-D mesh with axis ``data``: the batch is split along its first axis, the
train state is replicated, and a single jitted step runs on the global arrays
(XLA inserts the gradient all-reduce). Multi-host runs call
``jax.distributed.initialize()`` first; each process then feeds its own slice
of the global batch (``merjax.data.pipeline.local_rows``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over the given devices (default: all devices of all processes)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the mesh's devices."""
    if batch_size % mesh.size:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {mesh.size} devices of the mesh; "
            f"use a multiple of {mesh.size}")


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places this process's part of a batch (a nested dict of arrays) on the mesh as global arrays split along
    axis 0."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A replicated copy of ``tree`` on ``mesh``; never aliases the input, which the
    jitted train step may donate (so shared initial variables survive every fold).

    Every process passes the same ``tree`` (made from the same seed); each puts
    it on its own devices of the mesh (``device_put`` refuses a mesh that spans
    other processes' devices).
    """
    # A multi-device put may reuse the source buffer for one shard, so copy first.
    return multihost_utils.host_local_array_to_global_array(jax.tree.map(jnp.copy, tree), mesh, PartitionSpec())


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
    """Jits ``step(state, batch) -> (state, metrics)`` with a replicated state and a split batch."""
    return jax.jit(
        step,
        in_shardings=(replicated(mesh), batch_sharded(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=(0,),
    )


def jit_eval_step(step: Callable, mesh: Mesh) -> Callable:
    """Jits ``step(state, batch) -> outputs`` with outputs split like the batch."""
    return jax.jit(step, in_shardings=(replicated(mesh), batch_sharded(mesh)), out_shardings=batch_sharded(mesh))
