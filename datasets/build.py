"""Builds a merjax TFDS dataset as array_record: ``python -m datasets.build NAME[/CONFIG] [--data_dir=DIR]``.

Each dataset is a package ``datasets.<NAME>`` holding a module of the same
name whose import registers its TFDS builder. Licensed databases read the
user's copy from ``--manual_dir`` and crop faces at build time (``--crop_size``,
``--margin``, ``--every_frame_landmarks``, ``--detector``), or keep the whole
frame letterboxed to ``--crop_size`` with ``--full_frame``; the build prints
their report (clips per class against the known totals, every quirk fixed or
skipped), which is also stored in the dataset's ``metadata.json``. The embedded
``synthetic_me`` needs nothing. ``--data_dir`` defaults to ``$MERJAX_DATA_DIR``
(else ``~/merjax_data``), where the experiments look too.

A prepared copy is reused only while it matches the request: one built with
other face options, from another manual_dir, or (``clip_folder``) from a
``labels.csv`` or clip files that changed since is refused, naming what
differs and the command that rebuilds it (``--overwrite``); so is a damaged
copy (no or an unreadable ``dataset_info.json``, lost class names) and one
without every feature of the current schema. Copies live in a folder per
builder version (``<data_dir>/<name>/<config>/<version>``), so a builder with
a new version builds anew beside an older copy instead of reusing it;
full-frame copies live under ``<data_dir>/full_frame/`` (``stored_data_dir``),
so that a database can be prepared both ways at once.
Experiments call ``ensure_all_built``, which builds only what is missing.

User errors (an unknown name, a bad option, a manual_dir without the
database, a stale or damaged copy) are printed as one line ``error: ...`` with
exit status 2; ``--verbose`` or ``MERJAX_VERBOSE=1`` adds the traceback.

Examples:
  python -m datasets.build synthetic_me/smic_like --data_dir=/tmp/mj_data
  python -m datasets.build smic/hs --data_dir=DIR --manual_dir=/data/SMIC --overwrite
  python -m datasets.build casme2/cropped_4class --data_dir=DIR --manual_dir=/data/CASME2 --crop_size=128
  python -m datasets.build smic/hs_4class --data_dir=DIR --manual_dir=/data/SMIC --full_frame
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import pkgutil
import shlex
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import tensorflow_datasets as tfds

from datasets.core.builder import METADATA_FILE, FaceOptions, RealMEBuilder, read_build_report, report_lines
from datasets.core.layout import BUILD_FLAG, ManualDirError
from merjax.data import pipeline, schema
from merjax.errors import UserError

FILE_FORMAT = "array_record"
DATASETS_PACKAGE = "datasets"
DEFAULT_DATA_DIR = os.environ.get("MERJAX_DATA_DIR", os.path.expanduser("~/merjax_data"))
DETECTORS = ("dlib", "fan")   # FaceOptions.detector: merjax.faces backends
FULL_FRAME_FOLDER = "full_frame"   # under the data_dir: the copies built with FaceOptions.full_frame
VERBOSE_ENV = "MERJAX_VERBOSE"
USER_ERROR_STATUS = 2


@contextlib.contextmanager
def user_errors_as_one_line(verbose: bool = False) -> Iterator[None]:
    """Runs a command line's work; a ``UserError`` ends it as ``error: <message>`` on stderr, exit status 2.

    The traceback is printed too with ``verbose`` or ``MERJAX_VERBOSE=1``.
    Any other exception is a bug and keeps its traceback. Shared by the
    command lines of ``datasets`` and ``experiments``.
    """
    try:
        yield
    except UserError as error:
        if verbose or os.environ.get(VERBOSE_ENV, "0") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A prepared dataset: its directory (the versioned folder holding ``dataset_info.json``) and whether
    this call built it (then its build report, if any, is new to the user)."""

    directory: str
    built: bool


def known_datasets() -> list[str]:
    """Names of the dataset packages next to this module (each holds a same-named builder module)."""
    here = Path(__file__).parent
    return sorted(module.name for module in pkgutil.iter_modules([str(here)])
                  if module.ispkg and (here / module.name / f"{module.name}.py").is_file())


def split_name(name: str) -> tuple[str, str | None]:
    """'synthetic_me/smic_like' -> ('synthetic_me', 'smic_like'); a bare name has no config."""
    dataset, _, config = name.partition("/")
    if not dataset or "/" in config:
        raise UserError(f"dataset name must be NAME or NAME/CONFIG, got {name!r}")
    return dataset, config or None


def _builder_class(dataset: str) -> type[tfds.core.DatasetBuilder]:
    """Imports ``datasets.<dataset>`` (registering its builder) and returns the builder class."""
    known = known_datasets()
    if dataset not in known:
        raise UserError(f"unknown dataset {dataset!r}; known datasets: {known}")
    importlib.import_module(f"{DATASETS_PACKAGE}.{dataset}")
    try:
        return tfds.builder_cls(dataset)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"package {DATASETS_PACKAGE}.{dataset} registers no TFDS builder named "
                         f"{dataset!r}") from error


def reads_a_database(dataset: str) -> bool:
    """Whether ``dataset`` is built from a user's database copy (and so takes face options)."""
    return issubclass(_builder_class(dataset), RealMEBuilder)


def resolve_name(name: str) -> tuple[type[tfds.core.DatasetBuilder], str | None]:
    """The builder class of ``NAME[/CONFIG]`` and its config (the first one when none is named).

    Raises:
      UserError: naming the unknown dataset or config and listing the known ones.
    """
    dataset, config = split_name(name)
    builder_class = _builder_class(dataset)
    configs = [c.name for c in builder_class.BUILDER_CONFIGS]
    if config is not None and config not in configs:
        raise UserError(f"unknown config {config!r} of dataset {dataset!r}; known configs: {configs}")
    return builder_class, config if config is not None or not configs else configs[0]


def stored_data_dir(data_dir: str, faces: FaceOptions | None) -> str:
    """The TFDS data_dir a build with ``faces`` writes to: ``data_dir`` itself, or for full frames
    ``<data_dir>/full_frame``.

    Full frames are another kind of dataset than face crops (the scene, not
    the face), and seed 001 needs them while the other seeds need the crops of
    the same database: kept in their own folder, both copies can be prepared
    in one data_dir. Copies made with other face options share a folder, and
    ``stale_reasons`` refuses one that does not match the request.
    """
    return os.path.join(data_dir, FULL_FRAME_FOLDER) if faces is not None and faces.full_frame else data_dir


def make_builder(name: str, data_dir: str, faces: FaceOptions | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``NAME[/CONFIG]`` writing array_record under ``data_dir``.

    ``faces`` (real databases only; default ``FaceOptions()``) sets the face
    crop and landmarks made at build time; full-frame builds write under
    ``stored_data_dir``.

    Raises:
      UserError: naming the unknown dataset or config and listing the known ones.
    """
    builder_class, config = resolve_name(name)
    options: dict[str, Any] = {}
    if issubclass(builder_class, RealMEBuilder):
        options["faces"] = faces or FaceOptions()
    elif faces is not None:
        raise UserError(f"dataset {split_name(name)[0]!r} is not read from a database: it takes no face options")
    return builder_class(config=config, data_dir=stored_data_dir(data_dir, faces), file_format=FILE_FORMAT,
                         **options)


def prepared_dir(name: str, data_dir: str, faces: FaceOptions | None = None) -> Path:
    """Where TFDS keeps the prepared copy of ``NAME[/CONFIG]`` built with ``faces``:
    ``<data_dir>/<name>/<config>/<version>`` (full frames: under ``<data_dir>/full_frame``)."""
    builder_class, config = resolve_name(name)
    parts = [builder_class.name, *([config] if config else []), str(builder_class.VERSION)]
    return Path(stored_data_dir(data_dir, faces)).joinpath(*parts)


def rebuild_command(name: str, data_dir: str, manual_dir: str | None = None,
                    faces: FaceOptions | None = None) -> str:
    """The ``python -m datasets.build ... --overwrite`` command that rebuilds ``name`` as requested.

    Face options appear where they differ from the defaults (which the command line takes).
    """
    words = ["python -m datasets.build", name, f"--data_dir={shlex.quote(str(data_dir))}"]
    if manual_dir:
        words.append(f"{BUILD_FLAG}={shlex.quote(str(manual_dir))}")
    defaults = FaceOptions()
    for field in dataclasses.fields(FaceOptions):
        value = getattr(faces, field.name) if faces is not None else getattr(defaults, field.name)
        if value == getattr(defaults, field.name):
            continue
        words.append(f"--{field.name}" if value is True else f"--{field.name}={shlex.quote(str(value))}")
    return " ".join([*words, "--overwrite"])


def _same_path(first: str | Path, second: str | Path) -> bool:
    return Path(first).expanduser().resolve() == Path(second).expanduser().resolve()


def missing_features(prepared: tfds.core.DatasetBuilder) -> list[str]:
    """Why a prepared copy (opened from its folder) lacks part of the current schema (empty when it has it all)."""
    missing = sorted(schema.feature_names() - set(prepared.info.features.keys()))
    if not missing:
        return []
    return [f"it has no feature(s) {', '.join(missing)}: an older version of its builder wrote it"]


def stale_reasons(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> list[str]:
    """Why the prepared copy of ``builder`` does not match the request (empty when it does).

    A real database's copy records its face options and manual_dir in its build
    report: other face options, or a ``manual_dir`` given and different, make
    it stale; a face option the report lacks was added after the build, so the
    copy counts as built with that option's default (``full_frame`` False).
    Its ``source_changes`` also compares what the build read (``clip_folder``:
    ``labels.csv`` and the clip files; CASME II, SAMM, MEGC: their coding
    sheets) with the given manual_dir or, when none is given, the recorded one.
    A copy without a report (built by older code) is reused.
    """
    try:
        report = read_build_report(builder.data_dir)
    except ValueError as error:
        return [f"its build report {METADATA_FILE} is unreadable ({error})"]
    if not isinstance(builder, RealMEBuilder) or not report:
        return []
    reasons = []
    built, wanted = report.get("faces") or {}, dataclasses.asdict(builder.faces)
    if built:
        built = {**dataclasses.asdict(FaceOptions()), **built}
    differing = [key for key in wanted if built.get(key) != wanted[key]]
    if differing:
        reasons.append(f"it was built with face options {', '.join(f'{key}={built.get(key)!r}' for key in differing)}"
                       f", not {', '.join(f'{key}={wanted[key]!r}' for key in differing)}")
    recorded = report.get("manual_dir")
    if manual_dir and recorded and not _same_path(manual_dir, recorded):
        reasons.append(f"it was built from manual_dir {recorded}, not {manual_dir}")
    source = manual_dir or recorded
    if not reasons and source and Path(source).is_dir():
        reasons.extend(builder.source_changes(report, Path(source).expanduser()))
    return reasons


def prepare(name: str, data_dir: str, manual_dir: str | None = None, faces: FaceOptions | None = None,
            overwrite: bool = False) -> Prepared:
    """Builds ``NAME[/CONFIG]`` under ``data_dir`` unless a matching prepared copy is there.

    With ``overwrite`` the copy is deleted first and rebuilt (a damaged one included).

    Raises:
      UserError: when the prepared copy is damaged, lacks features of the
        schema (``missing_features``) or is stale (``stale_reasons``), naming
        what and the exact command that rebuilds it (from the given manual_dir,
        else the recorded one); when the manual_dir does not hold the database
        (``ManualDirError``).
    """
    directory = prepared_dir(name, data_dir, faces)

    def rebuild() -> str:
        recorded = None
        with contextlib.suppress(ValueError):
            recorded = (read_build_report(directory) or {}).get("manual_dir")
        return rebuild_command(name, data_dir, manual_dir or recorded, faces)

    if directory.exists() and overwrite:
        shutil.rmtree(directory)   # as TFDS would; also when the copy is too damaged for TFDS to reopen it
    if directory.exists():
        prepared = pipeline.open_prepared(str(directory), rebuild_command=rebuild())
        reasons = missing_features(prepared) or stale_reasons(make_builder(name, data_dir, faces), manual_dir)
        if reasons:
            raise UserError(f"the prepared copy {directory} does not match: {'; '.join(reasons)}; "
                            f"rebuild it: {rebuild()} (or use another data_dir)")
        return Prepared(str(directory), built=False)
    builder = make_builder(name, data_dir, faces)
    # the file format is the builder's own (make_builder); passing it again here fails on a prepared copy
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return Prepared(str(builder.data_dir), built=True)


def build(name: str, data_dir: str, manual_dir: str | None = None, overwrite: bool = False,
          faces: FaceOptions | None = None) -> str:
    """Prepares ``NAME[/CONFIG]`` (reusing a matching copy unless ``overwrite``); returns its directory."""
    return prepare(name, data_dir, manual_dir, faces, overwrite).directory


def ensure_built(name: str, data_dir: str, manual_dir: str | None = None,
                 faces: FaceOptions | None = None) -> str:
    """Builds ``NAME[/CONFIG]`` under ``data_dir`` only if it is not prepared yet; returns its directory.

    The directory is the versioned folder holding ``dataset_info.json``, ready
    for ``merjax.data.pipeline.load_clips``.

    Raises:
      UserError: when a prepared copy is damaged or stale (``prepare``).
    """
    return prepare(name, data_dir, manual_dir, faces).directory


def ensure_all_built(names: str, data_dir: str, manual_dir: str | None = None,
                     faces: Mapping[str, Any] | None = None,
                     manual_dir_flag: str = BUILD_FLAG) -> list[Prepared]:
    """``prepare`` for each of ``NAME[/CONFIG]+NAME[/CONFIG]...``, without overwriting.

    ``faces`` (FaceOptions fields) applies to the real databases only; the
    synthetic ones take none. One ``manual_dir`` may hold several databases:
    each builder searches it for its own folders. ``manual_dir_flag`` is the
    caller's name for the manual_dir, used in error messages (an experiment's
    ``--config.data.manual_dir``).
    """
    prepared = []
    for name in names.split("+"):
        is_real = reads_a_database(split_name(name)[0])
        options = FaceOptions(**faces) if is_real and faces is not None else None
        try:
            prepared.append(prepare(name, data_dir, manual_dir, options))
        except ManualDirError as error:
            raise error.naming_flag(manual_dir_flag) from error
    return prepared


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m datasets.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="NAME or NAME/CONFIG, e.g. synthetic_me/smic_like")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                        help="TFDS data directory to build into (default: $MERJAX_DATA_DIR, else ~/merjax_data)")
    parser.add_argument(BUILD_FLAG, default=None, help="the user's copy of a licensed database")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if already prepared")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a user error too")
    defaults = FaceOptions()
    faces = parser.add_argument_group("faces (real databases)")
    faces.add_argument("--crop_size", type=int, default=defaults.crop_size, help="square face crop, pixels")
    faces.add_argument("--margin", type=float, default=defaults.margin,
                       help="crop box = landmark box grown by this fraction of its side on each side")
    faces.add_argument("--every_frame_landmarks", action="store_true",
                       help="landmarks on every frame (default: the first frame's, repeated)")
    faces.add_argument("--detector", default=defaults.detector, choices=DETECTORS)
    faces.add_argument("--detector_weights", default=defaults.detector_weights,
                       help="local weights: dlib 68-point .dat (default: packaged) or the 2D-FAN TorchScript file")
    faces.add_argument("--detector_upsample", type=int, default=defaults.detector_upsample,
                       help="dlib HOG upsampling: 1 finds faces from ~40 px, 0 from ~80 px (~4x faster at 640x480)")
    faces.add_argument("--max_face_tries", type=int, default=defaults.max_face_tries,
                       help="frames tried from the first until a face is found")
    faces.add_argument("--full_frame", action="store_true",
                       help="store the whole frame letterboxed to --crop_size, not the face crop (landmarks still "
                            "stored; kept under DATA_DIR/full_frame)")
    return parser.parse_args(argv)


def face_options(args: argparse.Namespace) -> FaceOptions:
    """The face options of the command line.

    Raises:
      UserError: naming the bad option (``FaceOptions`` checks the values).
    """
    try:
        return FaceOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(FaceOptions)})
    except ValueError as error:
        raise UserError(f"bad face option: {error}") from error


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    with user_errors_as_one_line(args.verbose):
        is_real = reads_a_database(split_name(args.name)[0])
        if args.manual_dir and not is_real:
            raise UserError(f"{args.name} is not read from a database: drop {BUILD_FLAG}")
        faces = face_options(args) if is_real else None
        prepared = prepare(args.name, args.data_dir, args.manual_dir, faces, args.overwrite)
        report = read_build_report(prepared.directory)
        if report:
            print("\n".join(report_lines(report)))
        print(prepared.directory)


if __name__ == "__main__":
    main()
