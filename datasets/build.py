"""Builds a merjax TFDS dataset as array_record: ``python -m datasets.build NAME[/CONFIG] --data_dir=DIR``.

Each dataset is a package ``datasets.<NAME>`` whose import registers its TFDS
builder. Licensed databases read the user's copy from ``--manual_dir``; the
embedded ``synthetic_me`` needs nothing. Experiments call ``ensure_built``,
which builds only when the prepared dataset is missing and returns its
directory (the versioned folder holding ``dataset_info.json``).

Examples:
  python -m datasets.build synthetic_me/smic_like --data_dir=/tmp/mj_data
  python -m datasets.build smic/hs --data_dir=DIR --manual_dir=/data/SMIC --overwrite
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path
from typing import Sequence

import tensorflow_datasets as tfds

FILE_FORMAT = "array_record"
DATASETS_PACKAGE = "datasets"


def known_datasets() -> list[str]:
    """Names of the dataset packages next to this module (each a TFDS builder)."""
    return sorted(module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if module.ispkg)


def split_name(name: str) -> tuple[str, str | None]:
    """'synthetic_me/smic_like' -> ('synthetic_me', 'smic_like'); a bare name has no config."""
    dataset, _, config = name.partition("/")
    if not dataset or "/" in config:
        raise ValueError(f"dataset name must be NAME or NAME/CONFIG, got {name!r}")
    return dataset, config or None


def _builder_class(dataset: str) -> type[tfds.core.DatasetBuilder]:
    """Imports ``datasets.<dataset>`` (registering its builder) and returns the builder class."""
    known = known_datasets()
    if dataset not in known:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {known}")
    importlib.import_module(f"{DATASETS_PACKAGE}.{dataset}")
    try:
        return tfds.builder_cls(dataset)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"package {DATASETS_PACKAGE}.{dataset} registers no TFDS builder named "
                         f"{dataset!r}") from error


def make_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``NAME[/CONFIG]`` writing array_record under ``data_dir``.

    Raises:
      ValueError: naming the unknown dataset or config and listing the known ones.
    """
    dataset, config = split_name(name)
    builder_class = _builder_class(dataset)
    configs = [c.name for c in builder_class.BUILDER_CONFIGS]
    if config is not None and config not in configs:
        raise ValueError(f"unknown config {config!r} of dataset {dataset!r}; known configs: {configs}")
    if config is None and configs:
        config = configs[0]
    return builder_class(config=config, data_dir=data_dir, file_format=FILE_FORMAT)


def build(name: str, data_dir: str, manual_dir: str | None = None, overwrite: bool = False) -> str:
    """Prepares ``NAME[/CONFIG]`` (reusing an existing copy unless ``overwrite``); returns its directory."""
    builder = make_builder(name, data_dir)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode),
        file_format=FILE_FORMAT,
    )
    return str(builder.data_dir)


def ensure_built(name: str, data_dir: str, manual_dir: str | None = None) -> str:
    """Builds ``NAME[/CONFIG]`` under ``data_dir`` only if it is not prepared yet.

    Returns the prepared dataset directory (the versioned folder holding
    ``dataset_info.json``), ready for ``tfds.builder_from_directory`` /
    ``merjax.data.pipeline.load_clips``.
    """
    builder = make_builder(name, data_dir)
    if builder.is_prepared():
        return str(builder.data_dir)
    return build(name, data_dir, manual_dir)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m datasets.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="NAME or NAME/CONFIG, e.g. synthetic_me/smic_like")
    parser.add_argument("--data_dir", required=True, help="TFDS data directory to build into")
    parser.add_argument("--manual_dir", default=None, help="the user's copy of a licensed database")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if already prepared")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    print(build(args.name, args.data_dir, args.manual_dir, args.overwrite))


if __name__ == "__main__":
    main()
