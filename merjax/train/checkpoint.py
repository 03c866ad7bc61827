"""Per-epoch checkpoints with orbax, so an interrupted fold resumes where it stopped.

A checkpoint holds the whole train state (parameters, optimiser state, BatchNorm
statistics, dropout key, step) and the history of per-epoch metrics as JSON.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores ``(state, history)`` keyed by epoch in ``directory``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self._manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

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

    def close(self) -> None:
        self._manager.close()
