"""What produced a run's numbers: code, packages, devices, data, weights and seeds (``summary.json``'s ``provenance``).

The same command gave UF1 0.261 with one set of packages and 0.299 with
another, so a number without this record cannot be reproduced or compared.
``collect`` records, at the start of a run:

- the experiment, its preset and a sha256 of the whole configuration;
- merjax's version and the git commit of the checkout the experiments run from,
  with ``dirty`` (tracked files changed since that commit, named), or None when
  the code is not a git checkout;
- Python's and the numerically relevant packages' versions (None: not installed);
- the devices (platform, kinds, counts, processes);
- per dataset: TFDS name, config, version, directory, and sha256 digests of its
  ``dataset_info.json`` (split sizes and shard lengths) and of its build report
  (``metadata.json``, written by the real-database builders: source folder,
  face options, counts and quirks; None for the synthetic datasets, whose
  content is fixed by the builder's code, config and version);
- the backbone weights file's name, path and sha256, or that the model was
  trained from scratch;
- the seed(s).

The caller adds ``wall_seconds`` when the run ends.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from typing import Any, Sequence

import jax
import ml_collections

import merjax
from merjax import files, stamps
from merjax.errors import UserError

# Distributions whose version can change a number (numerics, data order, decoding, resizing) or the data build.
PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax", "optax", "orbax-checkpoint", "numpy",
            "ml_dtypes", "tensorflow-datasets", "array_record", "grain", "opencv-python-headless", "pillow",
            "dlib-bin", "ml_collections")
# Changed tracked files listed in the record at most (their count is always given).
MAX_LISTED_CHANGES = 20
GIT_TIMEOUT_SECONDS = 10


def collect(config: ml_collections.ConfigDict, dataset_dirs: Sequence[str]) -> dict[str, Any]:
    """The provenance record of a run of ``config`` on the prepared datasets in ``dataset_dirs``.

    Raises:
      UserError: when ``config.model.weights`` names a file that does not exist.
    """
    return {
        "experiment": config.experiment,
        "preset": config.get("preset") or None,
        "config_sha256": stamps.digest_value(json.loads(config.to_json_best_effort())),
        "seed": config.seed,
        "seeds": list(config.get("seeds") or ()),
        "merjax": {"version": merjax.__version__, **git_state(os.path.dirname(os.path.abspath(__file__)))},
        "python": platform.python_version(),
        "packages": package_versions(),
        "devices": devices(),
        "datasets": [dataset_record(directory) for directory in dataset_dirs],
        "weights": weights_record(config.model.weights),
    }


def git_state(directory: str) -> dict[str, Any]:
    """``commit``, ``dirty``, ``changed_files`` of the git checkout holding ``directory`` (None when there is none).

    ``dirty`` counts tracked files that differ from the commit (staged or not);
    untracked files (workdirs, notes) are not part of the code and not counted.
    A git repository that does not hold this package itself (e.g. one that
    happens to contain a virtual environment it is installed in) is not ours.
    """
    unknown = {"commit": None, "dirty": None, "changed_files": None, "num_changed_files": None}
    top = _git(directory, "rev-parse", "--show-toplevel")
    if top is None:
        return unknown
    top = top.strip()
    if os.path.realpath(os.path.join(top, os.path.basename(directory))) != os.path.realpath(directory):
        return unknown
    commit = _git(top, "rev-parse", "HEAD")
    status = _git(top, "status", "--porcelain", "--untracked-files=no")   # lines 'XY path'
    if commit is None or status is None:
        return unknown
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit.strip(), "dirty": bool(changed), "changed_files": changed[:MAX_LISTED_CHANGES],
            "num_changed_files": len(changed)}


def _git(directory: str, *args: str) -> str | None:
    """The output of ``git -C directory ARGS``, or None when git is missing, fails or hangs."""
    try:
        completed = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True,
                                   timeout=GIT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def devices() -> dict[str, Any]:
    return {
        "platform": jax.default_backend(),
        "kinds": sorted({device.device_kind for device in jax.devices()}),
        "count": jax.device_count(),
        "local_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


def dataset_record(directory: str) -> dict[str, Any]:
    """Name, config, version and content digests of a prepared TFDS dataset directory."""
    info_path = os.path.join(directory, "dataset_info.json")
    info = files.read_json(info_path, "the prepared dataset's info")
    report_path = os.path.join(directory, "metadata.json")   # datasets.core.builder.METADATA_FILE
    return {
        "name": info.get("name"),
        "config": info.get("configName"),
        "version": info.get("version"),
        "directory": os.path.abspath(directory),
        "dataset_info_sha256": stamps.digest_file(info_path),
        "build_report_sha256": stamps.digest_file(report_path) if os.path.isfile(report_path) else None,
    }


def weights_record(path: str) -> dict[str, Any]:
    """The weights file's name, path and sha256, or ``from_scratch`` when none is given."""
    if not path:
        return {"from_scratch": True, "file": None, "path": None, "sha256": None}
    if not os.path.isfile(path):
        raise UserError(f"config.model.weights: {path} does not exist; pass the path of a VGGFace2 weights file "
                        f"(.pkl or .h5) or '' to train from scratch")
    return {"from_scratch": False, "file": os.path.basename(path), "path": os.path.abspath(path),
            "sha256": stamps.digest_file(path)}


def markdown_lines(provenance: dict[str, Any] | None) -> list[str]:
    """The record as markdown bullet lines (``summary.md``'s Provenance section)."""
    if not provenance:
        return ["- not recorded"]
    code = provenance["merjax"]
    if code["commit"] is None:
        commit = "not a git checkout"
    else:
        commit = f"git {code['commit'][:12]}"
        if code["dirty"]:
            commit += (f", dirty ({code['num_changed_files']} changed tracked files: "
                       f"{', '.join(code['changed_files'])})")
    packages = ", ".join(f"{name} {version}" for name, version in provenance["packages"].items() if version)
    device = provenance["devices"]
    seeds = provenance["seeds"] or [provenance["seed"]]
    lines = [
        f"- experiment `{provenance['experiment']}`, preset `{provenance['preset']}`, "
        f"config sha256 `{provenance['config_sha256'][:16]}`",
        f"- merjax {code['version']} ({commit})",
        f"- Python {provenance['python']}; {packages}",
        f"- devices: {device['count']} × {', '.join(device['kinds'])} ({device['platform']}), "
        f"{device['process_count']} process(es)",
    ]
    for dataset in provenance["datasets"]:
        report = dataset["build_report_sha256"]
        lines.append(f"- dataset {dataset['name']}/{dataset['config']} {dataset['version']} in `{dataset['directory']}`"
                     f" (dataset_info sha256 `{dataset['dataset_info_sha256'][:16]}`, "
                     + (f"build report sha256 `{report[:16]}`)" if report else "no build report)"))
    weights = provenance["weights"]
    lines.append("- weights: trained from scratch" if weights["from_scratch"]
                 else f"- weights: `{weights['file']}` sha256 `{weights['sha256']}`")
    lines.append(f"- seed(s): {', '.join(str(seed) for seed in seeds)}")
    if provenance.get("wall_seconds") is not None:
        reused = provenance.get("stage_folds", {}).get("reused", 0)
        lines.append(f"- wall time: {provenance['wall_seconds']:.1f} s" + (
            f" (this invocation; {reused} of {provenance['stage_folds']['total']} stage-folds were finished by an "
            f"earlier run and reused: their training time is not in it)" if reused else ""))
    if provenance.get("differs_between_seeds"):
        lines.append(f"- **the seeds' runs differ in**: {', '.join(provenance['differs_between_seeds'])}")
    return lines
