"""Multi-process runs: one JAX process per host (or per GPU), joined with ``jax.distributed``.

Every process runs the same program. After ``initialize`` ``jax.devices()``
lists the devices of all processes, so ``sharding.data_mesh()`` spans them all;
each process loads only its rows of every global batch
(``merjax.data.pipeline.local_rows``) and the jitted steps exchange gradients
over the network (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
from jax.experimental import multihost_utils

from merjax.errors import UserError

# How long a process that finished waits at exit for the others (jax's default, 300 s, is shorter
# than what process 0 may still have to write on a loaded machine).
SHUTDOWN_TIMEOUT_SECONDS = 1800


def initialize(coordinator: str, num_processes: int, process_id: int) -> str:
    """Joins this process to a job of ``num_processes`` processes coordinated at ``coordinator``.

    Must run before anything touches a device (``jax.devices()``, any array).
    Returns a line that says which process this is and which devices it
    drives, for the command line to show.

    Args:
      coordinator: ``HOST:PORT`` of process 0, reachable from every process; a
        free port on that host (process 0 listens on it).
      num_processes: processes in the job.
      process_id: this process's index, ``0 <= process_id < num_processes``.

    Raises:
      UserError: naming the value when the address or indices cannot work.
    """
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"coordinator {coordinator!r} is not HOST:PORT; give process 0's address, "
                        f"e.g. --coordinator=10.0.0.1:12345")
    if num_processes < 1:
        raise UserError(f"num_processes {num_processes}: give the number of processes in the job (at least 1)")
    if not 0 <= process_id < num_processes:
        raise UserError(f"process_id {process_id} with num_processes {num_processes}: give each of the "
                        f"{num_processes} processes its own process_id in 0..{num_processes - 1}")
    # CPU processes exchange gradients over gloo: this jax's default, stated because older
    # releases gave CPUs no cross-process collectives by default. GPUs use NCCL regardless.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS)
    return (f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} of "
            f"{jax.device_count()} {jax.default_backend()} devices, coordinator {coordinator}")


def barrier(name: str) -> None:
    """Waits until every process of the job has reached the barrier ``name`` (returns at once in a one-process run).

    If a process stops before it gets here, the others fail with a
    coordination error instead of waiting forever.
    """
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def process_zero_first(name: str) -> Iterator[None]:
    """Runs the body on process 0, then, after a barrier, on the other processes.

    For work that every process needs but only one may do, such as building a
    dataset on first use: two processes building the same dataset at once
    collide (one fails renaming its copy into place); run after process 0, the
    others find it built.
    """
    if jax.process_index() == 0:
        yield
        barrier(name)
    else:
        barrier(name)
        yield
