"""Command line of the experiments: ``--config=FILE[:preset]``, ``--config.a.b=value``, ``--workdir``.

Each experiment module is a few lines that call ``main(name)``; the logic
lives in ``experiments/cv.py`` and the library.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def main(name: str) -> None:
    """Parses flags for experiment ``name`` and runs its cross-validation."""
    config_flag = config_flags.DEFINE_config_file(
        "config", os.path.join(CONFIG_DIR, f"{name}.py"), f"{name} config file[:preset]", lock_config=True)
    workdir_flag = flags.DEFINE_string("workdir", os.path.join("workdirs", name), "where outputs and checkpoints go")

    def run(argv: list[str]) -> None:
        del argv
        logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint at INFO
        from experiments import cv, report  # imported after flag parsing: JAX reads XLA_FLAGS at import

        summary = cv.run(config_flag.value, workdir_flag.value)
        print(report.markdown(summary))
        print(f"outputs in {os.path.abspath(workdir_flag.value)}")

    app.run(run)
