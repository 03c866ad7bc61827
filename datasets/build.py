"""Builds a merjax TFDS dataset as array_record: ``python -m datasets.build NAME[/CONFIG] --data_dir=DIR``.

Each dataset is a package ``datasets.<NAME>`` holding a module of the same
name whose import registers its TFDS builder. Licensed databases read the
user's copy from ``--manual_dir`` and crop faces at build time (``--crop_size``,
``--margin``, ``--every_frame_landmarks``, ``--detector``); the build prints
their report (clips per class against the known totals, every quirk fixed or
skipped), which is also stored in the dataset's ``metadata.json``. The embedded
``synthetic_me`` needs nothing. Experiments call ``ensure_built``, which builds
only when the prepared dataset is missing and returns its directory (the
versioned folder holding ``dataset_info.json``).

Examples:
  python -m datasets.build synthetic_me/smic_like --data_dir=/tmp/mj_data
  python -m datasets.build smic/hs --data_dir=DIR --manual_dir=/data/SMIC --overwrite
  python -m datasets.build casme2/cropped_4class --data_dir=DIR --manual_dir=/data/CASME2 --crop_size=128
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import tensorflow_datasets as tfds

from datasets.core.builder import FaceOptions, RealMEBuilder, read_build_report, report_lines

FILE_FORMAT = "array_record"
DATASETS_PACKAGE = "datasets"


def known_datasets() -> list[str]:
    """Names of the dataset packages next to this module (each holds a same-named builder module)."""
    here = Path(__file__).parent
    return sorted(module.name for module in pkgutil.iter_modules([str(here)])
                  if module.ispkg and (here / module.name / f"{module.name}.py").is_file())


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


def reads_a_database(dataset: str) -> bool:
    """Whether ``dataset`` is built from a user's database copy (and so takes face options)."""
    return issubclass(_builder_class(dataset), RealMEBuilder)


def make_builder(name: str, data_dir: str, faces: FaceOptions | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``NAME[/CONFIG]`` writing array_record under ``data_dir``.

    ``faces`` (real databases only; default ``FaceOptions()``) sets the face
    crop and landmarks made at build time.

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
    options: dict[str, Any] = {}
    if issubclass(builder_class, RealMEBuilder):
        options["faces"] = faces or FaceOptions()
    elif faces is not None:
        raise ValueError(f"dataset {dataset!r} is not read from a database: it takes no face options")
    return builder_class(config=config, data_dir=data_dir, file_format=FILE_FORMAT, **options)


def build(name: str, data_dir: str, manual_dir: str | None = None, overwrite: bool = False,
          faces: FaceOptions | None = None) -> str:
    """Prepares ``NAME[/CONFIG]`` (reusing an existing copy unless ``overwrite``); returns its directory."""
    builder = make_builder(name, data_dir, faces)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    # the file format is the builder's own (make_builder); passing it again here fails on a prepared copy
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode))
    return str(builder.data_dir)


def ensure_built(name: str, data_dir: str, manual_dir: str | None = None,
                 faces: FaceOptions | None = None) -> str:
    """Builds ``NAME[/CONFIG]`` under ``data_dir`` only if it is not prepared yet.

    Returns the prepared dataset directory (the versioned folder holding
    ``dataset_info.json``), ready for ``tfds.builder_from_directory`` /
    ``merjax.data.pipeline.load_clips``.

    Raises:
      ValueError: when a prepared real-database copy was built with other face
        options than ``faces`` (it is not rebuilt silently).
    """
    builder = make_builder(name, data_dir, faces)
    if not builder.is_prepared():
        return build(name, data_dir, manual_dir, faces=faces)
    report = read_build_report(builder.data_dir)
    if isinstance(builder, RealMEBuilder) and report is not None:
        wanted = dataclasses.asdict(builder.faces)
        if report["faces"] != wanted:
            raise ValueError(f"{builder.data_dir} was built with face options {report['faces']}, not {wanted}; "
                             f"rebuild it (python -m datasets.build {name} --overwrite ...) or use another data_dir")
    return str(builder.data_dir)


def ensure_all_built(names: str, data_dir: str, manual_dir: str | None = None,
                     faces: Mapping[str, Any] | None = None) -> list[str]:
    """``ensure_built`` for each of ``NAME[/CONFIG]+NAME[/CONFIG]...``; returns their directories.

    ``faces`` (FaceOptions fields) applies to the real databases only; the
    synthetic ones take none. One ``manual_dir`` may hold several databases:
    each builder searches it for its own folders.
    """
    directories = []
    for name in names.split("+"):
        is_real = reads_a_database(split_name(name)[0])
        options = FaceOptions(**faces) if is_real and faces is not None else None
        directories.append(ensure_built(name, data_dir, manual_dir, options))
    return directories


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m datasets.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="NAME or NAME/CONFIG, e.g. synthetic_me/smic_like")
    parser.add_argument("--data_dir", required=True, help="TFDS data directory to build into")
    parser.add_argument("--manual_dir", default=None, help="the user's copy of a licensed database")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if already prepared")
    defaults = FaceOptions()
    faces = parser.add_argument_group("faces (real databases)")
    faces.add_argument("--crop_size", type=int, default=defaults.crop_size, help="square face crop, pixels")
    faces.add_argument("--margin", type=float, default=defaults.margin,
                       help="crop box = landmark box grown by this fraction of its side on each side")
    faces.add_argument("--every_frame_landmarks", action="store_true",
                       help="landmarks on every frame (default: the first frame's, repeated)")
    faces.add_argument("--detector", default=defaults.detector, choices=("dlib", "fan"))
    faces.add_argument("--detector_weights", default=defaults.detector_weights,
                       help="local weights: dlib 68-point .dat (default: packaged) or the 2D-FAN TorchScript file")
    faces.add_argument("--detector_upsample", type=int, default=defaults.detector_upsample,
                       help="dlib HOG upsampling: 1 finds faces from ~40 px, 0 from ~80 px (~4x faster at 640x480)")
    faces.add_argument("--max_face_tries", type=int, default=defaults.max_face_tries,
                       help="frames tried from the first until a face is found")
    return parser.parse_args(argv)


def face_options(args: argparse.Namespace) -> FaceOptions:
    return FaceOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(FaceOptions)})


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    faces = face_options(args) if reads_a_database(split_name(args.name)[0]) else None
    dataset_dir = build(args.name, args.data_dir, args.manual_dir, args.overwrite, faces)
    report = read_build_report(dataset_dir)
    if report is not None:
        print("\n".join(report_lines(report)))
    print(dataset_dir)


if __name__ == "__main__":
    main()
