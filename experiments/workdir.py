"""One run per workdir, of one configuration: the lock and the config check every experiment starts with.

A workdir holds what a run reuses when it is restarted (finished folds,
checkpoints, caches). Reusing them is only right when the restarted run has the
same configuration, and only one run may write them at a time. ``claim``:

- takes an exclusive lock on ``WORKDIR/.lock`` (``fcntl.flock``: released by the
  kernel when the process ends, so a killed run leaves no stale lock); a second
  run in the same workdir stops with one line naming the holder;
- compares the configuration with the ``config.json`` of an earlier run there
  and refuses, naming every differing key with both values, unless
  ``overwrite`` — which empties the workdir and starts afresh;
- writes ``config.json`` atomically.

Keys that cannot change any result (loader threads, where a cache is kept) are
left out of the comparison (``IGNORED_KEYS``). In a multi-process run only
process 0 locks and writes; every process passes a barrier after the claim so
none reads the workdir before process 0 has checked or emptied it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from typing import Any, Iterator, Mapping

import jax
import ml_collections

from merjax import files, stamps
from merjax.errors import UserError
from merjax.train import distributed

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# Dotted config keys that do not change any result of a run.
IGNORED_KEYS = frozenset({"data.num_threads", "train.cache_memory_gb", "seeds"})


def config_dict(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as plain JSON values."""
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def results_config(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
    """The configuration without ``IGNORED_KEYS``: what a run's results depend on."""
    values = config_dict(config)
    for key in IGNORED_KEYS:
        *parents, leaf = key.split(".")
        node = values
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    return values


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Holds an exclusive lock on ``workdir`` (raises UserError at once if another run holds it)."""
    path = os.path.join(workdir, LOCK_FILE)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"workdir {workdir} is in use by a running experiment ({holder}); wait for it to end "
                            f"or pass another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def empty(workdir: str) -> None:
    """Removes everything in ``workdir`` except its lock file."""
    for name in os.listdir(workdir):
        if name == LOCK_FILE:
            continue
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


@contextlib.contextmanager
def claim(workdir: str, config: ml_collections.ConfigDict | Mapping[str, Any],
          overwrite: bool = False) -> Iterator[None]:
    """Locks ``workdir`` for this run and checks (or, with ``overwrite``, clears) what an earlier run left.

    Raises:
      UserError: when another run holds the workdir, or an earlier run there had
        another configuration (every differing key is named).
    """
    if jax.process_index() != 0:
        distributed.barrier(f"claim {workdir}")
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    wanted = config_dict(config)
    with lock(workdir):
        recorded_path = os.path.join(workdir, CONFIG_FILE)
        if overwrite:
            empty(workdir)
        elif os.path.exists(recorded_path):
            changed = stamps.differences(files.read_json(recorded_path, "the earlier run's config"), wanted,
                                        IGNORED_KEYS)
            if changed:
                raise UserError(f"workdir {workdir} holds a run of another configuration ({'; '.join(changed)}); "
                                f"rerun with --overwrite to discard it and start afresh, or pass another --workdir")
        files.atomic_write_json(recorded_path, wanted, indent=2)
        distributed.barrier(f"claim {workdir}")
        yield
