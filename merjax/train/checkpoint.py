"""Per-epoch checkpoints with orbax, so an interrupted fold resumes where it stopped.

A checkpoint holds the whole train state (parameters, optimiser state, BatchNorm
statistics, dropout key, step) and the history of per-epoch metrics as JSON.
A checkpoint cut short or damaged by a crash does not block a resume:
``restore_latest_readable`` falls back to the newest one that reads and removes
the damaged ones, reporting each in one line.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from merjax.train import distributed


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: the state, the history up to it and its epoch."""

    state: Any
    history: list[dict[str, Any]]
    epoch: int


class Checkpointer:
    """Saves and restores ``(state, history)`` keyed by epoch in ``directory``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self._manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    @property
    def directory(self) -> str:
        return str(self._manager.directory)

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def epochs(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state: Any, history: list[dict[str, Any]]) -> None:
        self._manager.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)),
        )
        self._manager.wait_until_finished()

    def restore(self, template: Any, epoch: int | None = None) -> tuple[Any, list[dict[str, Any]], int]:
        """Restores into the structure, shapes and shardings of ``template``.

        Returns (state, history, epoch). Raises FileNotFoundError when there is
        no checkpoint to restore.
        """
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint in {self._manager.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()),
        )
        return restored.state, list(restored.history), epoch

    def restore_latest_readable(self, template: Any) -> tuple[Restored | None, list[str]]:
        """The newest checkpoint that restores into ``template`` (None when none does), and what was skipped.

        Each newer checkpoint that fails to restore (truncated file, damaged
        metadata) is deleted, so that its epoch can be saved again, and
        described in one line of the returned list.
        """
        skipped = []
        for epoch in reversed(self.epochs()):
            try:
                state, history, _ = self.restore(template, epoch)
            except Exception as error:  # noqa: BLE001 - any failure to read means: fall back one checkpoint
                skipped.append(f"checkpoint of epoch {epoch + 1} in {self.directory} is unreadable "
                               f"({type(error).__name__}: {_first_line(error)}); removed")
                self.remove(epoch)
                continue
            return Restored(state, history, epoch), skipped
        return None, skipped

    def remove(self, epoch: int) -> None:
        """Deletes the checkpoint of ``epoch`` (process 0 deletes; every process reloads the list once it is gone)."""
        if jax.process_index() == 0:
            shutil.rmtree(os.path.join(self.directory, str(epoch)), ignore_errors=True)
        distributed.barrier(f"removed {self.directory}/{epoch}")
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 160 else f"{line[:157]}..."
