"""Command line of the experiments: ``--config=FILE[:preset]``, ``--config.a.b=value``, ``--workdir``.

Each experiment module is a few lines that call ``main(name)`` (the subject-wise
cross-validation of ``experiments/cv.py``) or ``main(name, run)`` with its own
run function; the logic lives in ``experiments/`` and the library.

The config is validated before the run (``experiments/configs/validate.py``).
A user error (a bad config value, file or data) ends the run as one line
``error: ...`` on stderr with exit status 2; ``--verbose`` or
``MERJAX_VERBOSE=1`` adds its traceback. Other errors are bugs and keep theirs.
"""

from __future__ import annotations

import os
from typing import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from datasets.build import user_errors_as_one_line
from experiments import workdir
from experiments.configs.validate import validate
from merjax.train import distributed

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

# run(config, workdir) runs an experiment, writes its outputs to workdir and returns the text to print.
Runner = Callable[[ml_collections.ConfigDict, str], str]


def cross_validation(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The default runner: ``cv.run`` and its markdown summary; with ``config.seeds``, once per seed and over seeds."""
    from experiments import cv, report, seeds  # imported on use: the experiments that pass their own runner skip them

    if config.get("seeds"):
        return seeds.markdown(seeds.run_seeds(config, workdir, cv.run))
    return report.markdown(cv.run(config, workdir))


def main(name: str, run: Runner = cross_validation, check_flags: Callable[[], None] | None = None) -> None:
    """Parses flags for experiment ``name`` (config ``configs/{name}.py``) and runs it with ``run``;
    ``check_flags`` (raising a UserError) checks an experiment's own flags before anything is written."""
    config_flag = config_flags.DEFINE_config_file(
        "config", os.path.join(CONFIG_DIR, f"{name}.py"), f"{name} config file[:preset]", lock_config=True)
    workdir_flag = flags.DEFINE_string("workdir", os.path.join("workdirs", name), "where outputs and checkpoints go")
    coordinator_flag = flags.DEFINE_string(
        "coordinator", "", "HOST:PORT of process 0 in a multi-process run (with --num_processes, --process_id)")
    num_processes_flag = flags.DEFINE_integer("num_processes", 1, "processes in a multi-process run")
    process_id_flag = flags.DEFINE_integer("process_id", 0, "this process's index in a multi-process run")
    overwrite_flag = flags.DEFINE_bool(
        "overwrite", False, "discard what an earlier run left in --workdir and start afresh (without it, a rerun "
        "of the same config resumes and one of another config is refused)")
    verbose_flag = flags.DEFINE_bool("verbose", False, "print the traceback of a user error too (also MERJAX_VERBOSE=1)")

    def run_flags(argv: list[str]) -> None:
        del argv
        logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint at INFO
        with user_errors_as_one_line(verbose_flag.value):
            if coordinator_flag.value or num_processes_flag.value != 1:   # before anything touches a device
                print(distributed.initialize(coordinator_flag.value, num_processes_flag.value, process_id_flag.value))
            if check_flags is not None:
                check_flags()
            validate(config_flag.value)
            with workdir.claim(workdir_flag.value, config_flag.value, overwrite=overwrite_flag.value):
                text = run(config_flag.value, workdir_flag.value)
            # Process 0 writes the reports alone; the others wait here rather than in jax's shutdown
            # barrier, whose timeout a slow report (a loaded machine) can exceed.
            distributed.barrier("run finished")
        print(text)
        print(f"outputs in {os.path.abspath(workdir_flag.value)}")

    app.run(run_flags)
