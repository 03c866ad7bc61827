"""TFDS builder ``synthetic_me``: rendered micro-expression clips, merjax's embedded default data.

The licensed databases cannot ship, so experiments run out of the box on clips
rendered offline by ``render.py``: SMIC-HS's subjects and per-subject class
counts, expressions as action-unit displacement fields with an onset -> apex ->
offset envelope, nuisances (head drift, blinks, flicker, noise) larger than the
expression, and a neutral first frame so that a single-frame model sits near
chance. Every clip is one example of the shared schema
(``merjax.data.schema``) in one split, ``train``; protocols split it by subject.

Determinism: subject ``i`` draws its identity from
``np.random.default_rng([seed, 0, i])`` and clip ``j`` (its position in
``clip_plan``) everything else from ``np.random.default_rng([seed, 1, j])``, so
one seed gives byte-identical array_record files. The plan lists clips class by
class, so configs that add a class (``smic_like_4class``) keep the other
classes' clips identical to the config without it (same seed).

Action units: each example stores the AUs its clip rendered (``EXPRESSIONS``),
written as CASME II's sheet writes them (ascending numbers joined by ``+``,
e.g. ``'6+12'``; '' for a non_micro clip, which renders none), and the
objective class those AUs give by Davison et al.'s table
(``merjax.data.labels.objective_class_of``: the class listing exactly that
set, else VII "others"; -1 without an AU). The table does not follow the
class words: positive clips (6+12) are I and surprise clips II (1+2) or VII
(1+2+5, not in the table); negative and others clips fall in III, IV, V or
VII depending on the AUs drawn.

Composite (``megc_like``, seed 002): the MEGC 2019 composite's 68 subjects
with the official list's per-subject (negative, positive, surprise) counts
(``megc2019_counts``; 442 clips), named as the ``megc2019`` builder names
them, in three ``databases`` with their own character (``DatabaseStyle``):
``smic`` 100 fps colour, ``casme2`` 200 fps colour, ``samm`` 200 fps
grayscale. Each example's ``dataset`` is its database, as in ``megc2019``, so
``merjax.data.protocols.composite_loso`` and per-database reports run
unchanged; the smic third stores no AUs ('' and -1), as SMIC codes none.
Subject ``i`` of the composite has the same face as subject ``i`` of the other
configs (the smic subjects are ``smic_like``'s); the clips differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import cv2
import numpy as np
import tensorflow_datasets as tfds

from datasets.core.rendered import RenderedBuilder
from datasets.core.sheets import disk_names, read_megc_list
from datasets.megc2019.megc2019 import LIST_FILE as MEGC2019_LIST
from datasets.synthetic_me import render
from merjax.data import labels, schema
from merjax.data.protocols import natural_key

DATASET_NAME = "synthetic_me"

# SMIC clip-name abbreviations; ``nm`` (non-micro) and ``oth`` (others) follow the same pattern.
CLASS_ABBREVIATIONS: Mapping[str, str] = {
    "negative": "ne", "positive": "po", "surprise": "sur", "non_micro": "nm", "others": "oth",
}

# SMIC-HS subjects and their (negative, positive, surprise) clip counts
# (reference/datasets.md §1.3, from the official MEGC 2019 list): 70 / 51 / 43 = 164.
SMIC_HS_COUNTS: Mapping[str, tuple[int, int, int]] = {
    "s1": (3, 2, 1), "s2": (0, 1, 5), "s3": (22, 11, 6), "s4": (10, 4, 5),
    "s5": (1, 0, 1), "s6": (2, 0, 2), "s8": (9, 4, 0), "s9": (0, 1, 3),
    "s11": (3, 3, 1), "s12": (0, 8, 1), "s13": (0, 10, 0), "s14": (3, 2, 5),
    "s15": (1, 1, 2), "s18": (2, 0, 5), "s19": (0, 1, 1), "s20": (14, 3, 5),
}

CASME2_4 = ("negative", "positive", "surprise", "others")
# CASME II-like (negative, positive, surprise, others) counts for sub01..sub26: each subject's
# CASME II clip total scaled by 150/255, split with CASME II's class shares
# (0.27, 0.13, 0.11, 0.49) by one fixed multinomial draw; 32 / 23 / 17 / 76 = 148 clips.
CASME2_LIKE_COUNTS: Mapping[str, tuple[int, int, int, int]] = {
    "sub01": (1, 0, 1, 3), "sub02": (1, 1, 2, 4), "sub03": (0, 0, 0, 4), "sub04": (1, 0, 0, 2),
    "sub05": (3, 2, 1, 5), "sub06": (1, 1, 0, 1), "sub07": (1, 0, 0, 4), "sub08": (0, 1, 0, 1),
    "sub09": (1, 3, 1, 3), "sub10": (3, 0, 0, 5), "sub11": (1, 2, 1, 2), "sub12": (3, 1, 0, 3),
    "sub13": (1, 1, 1, 2), "sub14": (0, 1, 0, 1), "sub15": (1, 0, 0, 1), "sub16": (0, 0, 0, 2),
    "sub17": (3, 1, 4, 13), "sub18": (0, 1, 1, 0), "sub19": (2, 3, 1, 3), "sub20": (2, 0, 0, 4),
    "sub21": (0, 0, 0, 1), "sub22": (0, 0, 1, 0), "sub23": (0, 1, 1, 5), "sub24": (2, 1, 2, 1),
    "sub25": (2, 0, 0, 2), "sub26": (3, 3, 0, 4),
}


def _with_non_micro(counts: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Adds a non_micro count equal to each subject's number of micro-expression clips."""
    return {subject: tuple(row) + (sum(row),) for subject, row in counts.items()}


# The MEGC 2019 composite's databases in Table 1's order (seed 002), named as the real builders write
# ``dataset`` (``megc2019`` keeps each clip's own database there).
MEGC_DATABASES = ("smic", "casme2", "samm")


def megc2019_counts() -> dict[str, dict[str, tuple[int, int, int]]]:
    """Per database of ``MEGC_DATABASES``, each subject's (negative, positive, surprise) clip counts.

    Read from the official list shipped with the ``megc2019`` builder, subjects named as its examples
    name them (SMIC ``s1``, CASME II ``sub01``, SAMM ``006``), in natural order: 16 + 24 + 28 = 68
    subjects, 442 clips (Table 1 of seed 002: SMIC 70/51/43, CASME II 88/32/25, SAMM 92/26/15).
    """
    listed, _ = read_megc_list(MEGC2019_LIST)
    counts: dict[str, dict[str, list[int]]] = {database: {} for database in MEGC_DATABASES}
    for row in listed:
        subject, _ = disk_names(row)
        counts[row.dataset].setdefault(subject, [0] * len(labels.MEGC_3))[row.label] += 1
    return {database: {subject: tuple(rows[subject]) for subject in sorted(rows, key=natural_key)}
            for database, rows in counts.items()}


# --------------------------------------------------------------------------- #
# Expressions: which action units each class moves.
# --------------------------------------------------------------------------- #

def _positive(rng: np.random.Generator) -> dict[int, float]:
    """Happiness: cheek raiser + lip corner puller."""
    return {6: rng.uniform(0.4, 1.0), 12: rng.uniform(0.7, 1.0)}


def _surprise(rng: np.random.Generator) -> dict[int, float]:
    """Inner + outer brow raiser, with the upper lid raiser in half the clips."""
    aus = {1: rng.uniform(0.6, 1.0), 2: rng.uniform(0.6, 1.0)}
    if rng.uniform() < 0.5:
        aus[5] = rng.uniform(0.5, 1.0)
    return aus


def _random_mix(rng: np.random.Generator, pool: tuple[int, ...]) -> dict[int, float]:
    """One to len(pool)-1 distinct AUs of ``pool`` with random intensities."""
    count = int(rng.integers(1, len(pool)))
    chosen = sorted(int(au) for au in rng.choice(pool, size=count, replace=False))
    return {au: rng.uniform(0.5, 1.0) for au in chosen}


def _negative(rng: np.random.Generator) -> dict[int, float]:
    """Disgust / sadness / anger-like: a mix of brow lowerer, nose wrinkler, dimpler, lip corner depressor."""
    return _random_mix(rng, (4, 9, 14, 15))


def _others(rng: np.random.Generator) -> dict[int, float]:
    """CASME II 'others': AUs none of the other classes use (lid tightener, chin raiser, lip pressor)."""
    return _random_mix(rng, (7, 17, 24))


def _non_micro(rng: np.random.Generator) -> dict[int, float]:
    """No action unit: only the nuisances move (seed 001's non-micro-expression clips)."""
    return {}


EXPRESSIONS: Mapping[str, Callable[[np.random.Generator], dict[int, float]]] = {
    "negative": _negative, "positive": _positive, "surprise": _surprise,
    "others": _others, "non_micro": _non_micro,
}


# --------------------------------------------------------------------------- #
# Configs.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class DatabaseStyle:
    """One database's character: the examples' ``dataset``, its subjects, frame rate, clip lengths and colour.

    Clip lengths follow a Beta(2, b) law on ``frames`` with mean ``mean_frames``;
    a ``grayscale`` database renders grey faces with one-channel sensor noise,
    stored as 3 equal channels (as the SAMM builder stores SAMM's grey frames).
    A database that does not ``codes_action_units`` (SMIC) stores '' and -1 as
    its real builder does; its clips still render the AUs of their class.
    """

    name: str
    subjects: tuple[str, ...]
    fps: float
    frames: tuple[int, int]
    mean_frames: float
    grayscale: bool = False
    codes_action_units: bool = True


@dataclasses.dataclass(eq=False)
class SyntheticMEConfig(tfds.core.BuilderConfig):
    """One shape of synthetic database; ``counts[s][c]`` clips of class ``c`` for subject ``s``.

    Without ``databases`` every clip has the config's ``fps`` and lengths and
    the dataset name ``synthetic_me``; a composite (``megc_like``) lists its
    databases, which split the subjects and replace those three.
    """

    class_names: tuple[str, ...] = labels.SMIC_3
    counts: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    fps: float = 100.0
    frames: tuple[int, int] = (11, 58)      # shortest and longest clip, frames
    mean_frames: float = 30.0
    image_size: int = 128
    seed: int = 0
    motion: render.MotionParams = render.MotionParams()
    databases: tuple[DatabaseStyle, ...] = ()

    def __post_init__(self) -> None:
        unknown = [name for name in self.class_names if name not in EXPRESSIONS]
        if unknown:
            raise ValueError(f"config {self.name!r}: no expression model for {unknown}; known: {list(EXPRESSIONS)}")
        for subject, row in self.counts.items():
            if len(row) != len(self.class_names):
                raise ValueError(f"config {self.name!r}: subject {subject!r} has {len(row)} counts "
                                 f"for {len(self.class_names)} classes")
        for database in self.database_styles():
            low, high = database.frames
            if not low < database.mean_frames < high:
                raise ValueError(f"config {self.name!r}, database {database.name!r}: mean_frames="
                                 f"{database.mean_frames} must lie in {database.frames}")
        listed = [subject for database in self.database_styles() for subject in database.subjects]
        if sorted(listed) != sorted(self.counts):
            raise ValueError(f"config {self.name!r}: its databases list the subjects {sorted(listed)}; every "
                             f"subject of counts must be listed once: {sorted(self.counts)}")

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self.counts)

    def database_styles(self) -> tuple[DatabaseStyle, ...]:
        """``databases``, or where none are listed one named ``synthetic_me`` with the config's fps and lengths."""
        return self.databases or (
            DatabaseStyle(DATASET_NAME, self.subjects, self.fps, self.frames, self.mean_frames),)

    def database_of(self, subject: str) -> DatabaseStyle:
        """The database ``subject`` belongs to."""
        return next(database for database in self.database_styles() if subject in database.subjects)

    def class_totals(self) -> dict[str, int]:
        return {name: sum(row[c] for row in self.counts.values()) for c, name in enumerate(self.class_names)}


SMIC_LIKE = SyntheticMEConfig(
    name="smic_like",
    description="SMIC-HS-like: 16 subjects, 164 clips (negative 70, positive 51, surprise 43), 100 fps, "
                "11-58 frames, 128x128.",
    counts=dict(SMIC_HS_COUNTS),
)
SMIC_LIKE_4CLASS = SyntheticMEConfig(
    name="smic_like_4class",
    description="smic_like plus a non_micro class (seed 001): per subject as many non-micro clips "
                "(blinks, head drift, no AU) as micro clips; 328 clips.",
    class_names=labels.SMIC_4,
    counts=_with_non_micro(SMIC_HS_COUNTS),
)
CASME2_LIKE = SyntheticMEConfig(
    name="casme2_like",
    description="CASME II-like: 26 subjects, 148 clips (negative 32, positive 23, surprise 17, others 76), "
                "200 fps, 30-90 frames, 128x128.",
    class_names=CASME2_4,
    counts=dict(CASME2_LIKE_COUNTS),
    fps=200.0,
    frames=(30, 90),
    mean_frames=55.0,
)
MEGC_COUNTS = megc2019_counts()
MEGC_LIKE = SyntheticMEConfig(
    name="megc_like",
    description="MEGC 2019 composite-like (seed 002): 68 subjects, 442 clips (negative 250, positive 109, "
                "surprise 83) with the official list's subjects and per-subject counts, in three databases: "
                "smic (16 subjects, 100 fps, colour, 11-58 frames, no AUs coded), casme2 (24, 200 fps, colour, "
                "30-90 frames), samm (28, 200 fps, grayscale, 30-90 frames); 128x128.",
    class_names=labels.MEGC_3,
    counts={subject: row for rows in MEGC_COUNTS.values() for subject, row in rows.items()},
    databases=(
        DatabaseStyle("smic", tuple(MEGC_COUNTS["smic"]), SMIC_LIKE.fps, SMIC_LIKE.frames, SMIC_LIKE.mean_frames,
                      codes_action_units=False),
        DatabaseStyle("casme2", tuple(MEGC_COUNTS["casme2"]), CASME2_LIKE.fps, CASME2_LIKE.frames,
                      CASME2_LIKE.mean_frames),
        DatabaseStyle("samm", tuple(MEGC_COUNTS["samm"]), CASME2_LIKE.fps, CASME2_LIKE.frames,
                      CASME2_LIKE.mean_frames, grayscale=True),
    ),
)
TINY = SyntheticMEConfig(
    name="tiny",
    description="For tests: 4 subjects x 2 clips per class, 3 classes, 6-12 frames, 32x32.",
    counts={subject: (2, 2, 2) for subject in ("s1", "s2", "s3", "s4")},
    frames=(6, 12),
    mean_frames=9.0,
    image_size=32,
)
CONFIGS = (SMIC_LIKE, SMIC_LIKE_4CLASS, MEGC_LIKE, CASME2_LIKE, TINY)


# --------------------------------------------------------------------------- #
# The clip plan and one clip.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One clip to render: ``index`` (its place in the plan) seeds its random generator."""

    index: int
    subject: str
    subject_index: int
    class_name: str
    number: int  # 1-based, per subject and class

    @property
    def clip(self) -> str:
        return f"{self.subject}_{CLASS_ABBREVIATIONS[self.class_name]}_{self.number:02d}"


def clip_plan(config: SyntheticMEConfig) -> list[ClipSpec]:
    """Every clip of the config, class by class, then subject by subject."""
    specs = []
    for label, class_name in enumerate(config.class_names):
        for subject_index, (subject, row) in enumerate(config.counts.items()):
            for number in range(1, row[label] + 1):
                specs.append(ClipSpec(len(specs), subject, subject_index, class_name, number))
    return specs


@dataclasses.dataclass(frozen=True)
class SubjectFace:
    identity: render.Identity
    image: np.ndarray          # neutral face, float32 [S,S,3] in 0..255
    control_points: np.ndarray  # [73,2] pixels


@dataclasses.dataclass(frozen=True)
class SynthesizedClip:
    spec: ClipSpec
    action_units: dict[int, float]
    apex: int
    motion: render.ClipMotion
    rendered: render.RenderedClip


def subject_face(config: SyntheticMEConfig, subject_index: int) -> SubjectFace:
    """Draws and renders the neutral face of the config's ``subject_index``-th subject."""
    identity = render.sample_identity(np.random.default_rng([config.seed, 0, subject_index]))
    size = config.image_size
    return SubjectFace(identity, render.render_neutral(identity, size), identity.control_points * size)


def _clip_length(rng: np.random.Generator, database: DatabaseStyle) -> int:
    """A Beta(2, b) length on ``database.frames`` whose mean is ``database.mean_frames``."""
    low, high = database.frames
    b = 2.0 * (high - low) / (database.mean_frames - low) - 2.0
    return low + int(round(rng.beta(2.0, b) * (high - low)))


def _grey(image: np.ndarray) -> np.ndarray:
    """The RGB image [S,S,3] as grey (ITU-R BT.601 luma) in 3 equal channels."""
    return np.repeat(cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)


def synthesize_clip(config: SyntheticMEConfig, spec: ClipSpec, face: SubjectFace | None = None) -> SynthesizedClip:
    """Renders one clip; ``face`` (the subject's, from ``subject_face``) may be passed to reuse it."""
    face = face if face is not None else subject_face(config, spec.subject_index)
    database = config.database_of(spec.subject)
    rng = np.random.default_rng([config.seed, 1, spec.index])
    num_frames = _clip_length(rng, database)
    apex = int(rng.integers(num_frames // 3, max(num_frames // 3 + 1, (2 * num_frames) // 3)))
    action_units = EXPRESSIONS[spec.class_name](rng)
    motion = render.sample_motion(rng, action_units, num_frames, apex, database.fps, face.control_points,
                                  config.image_size, config.motion)
    if not database.grayscale:
        rendered = render.render_clip(face.image, face.control_points, motion, rng)
    else:   # a grey face; one channel's noise, repeated, is a grey camera's noise
        rendered = render.render_clip(_grey(face.image), face.control_points, motion, rng)
        rendered = dataclasses.replace(rendered, frames=np.repeat(rendered.frames[..., :1], 3, axis=-1))
    return SynthesizedClip(spec, action_units, apex, motion, rendered)


def action_unit_string(action_units: Mapping[int, float]) -> str:
    """The rendered AUs as CASME II writes them: ascending numbers joined by '+' (``'6+12'``; '' for none)."""
    return "+".join(str(au) for au in sorted(action_units))


def to_example(config: SyntheticMEConfig, clip: SynthesizedClip) -> dict[str, Any]:
    """The clip as one example of the shared schema, with the true AUs it rendered and their objective class."""
    num_frames = len(clip.rendered.frames)
    database = config.database_of(clip.spec.subject)
    return {
        "frames": clip.rendered.frames,
        "landmarks": clip.rendered.landmarks,
        "label": config.class_names.index(clip.spec.class_name),
        "emotion": clip.spec.class_name,
        "subject": clip.spec.subject,
        "clip": clip.spec.clip,
        "dataset": database.name,
        "onset": 0,
        "apex": clip.apex,
        "offset": num_frames - 1,
        "fps": database.fps,
        "action_units": action_unit_string(clip.action_units) if database.codes_action_units else "",
        "objective_class": (labels.objective_class_of(clip.action_units) if database.codes_action_units
                            else schema.UNKNOWN_OBJECTIVE_CLASS),
    }


def generate_examples(config: SyntheticMEConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (clip id, validated example) for every clip of the plan, rendering each face once."""
    faces: dict[int, SubjectFace] = {}
    for spec in clip_plan(config):
        if spec.subject_index not in faces:
            faces[spec.subject_index] = subject_face(config, spec.subject_index)
        example = to_example(config, synthesize_clip(config, spec, faces[spec.subject_index]))
        schema.validate(example, where=f"{DATASET_NAME}/{config.name}: {spec.clip}")
        yield spec.clip, example


class SyntheticMe(RenderedBuilder):
    """Rendered SMIC-like, CASME II-like and MEGC 2019-like micro-expression clips; see the module docstring."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Examples carry action_units (the AUs rendered, e.g. '6+12'; '' for non_micro clips) and "
                 "objective_class (from those AUs by Davison et al.'s table; -1 without an AU). Frames, "
                 "landmarks and labels are those of 1.0.0.",
    }
    BUILDER_CONFIGS = list(CONFIGS)

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly rather than with dataset_info_from_configs, which would take the
        # description from README.md (with its measured numbers) instead of this module's.
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{config.description}\n\n{__doc__}",
            features=schema.features(config.class_names, config.image_size),
        )

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return generate_examples(self.builder_config)
