"""TFDS builder ``synthetic_faces``: rendered face images, the embedded pretraining stand-in for VGGFace2.

Seed 001 fine-tunes a ResNet-50 pretrained on VGGFace2 (face identities);
seed 004 pretrains on 3383 posed macro-expression images in nine classes.
Neither corpus can ship, so merjax pretrains on faces rendered by
``synthetic_me``'s renderer (``datasets/synthetic_me/render.py``): many
identities, each posing every one of seed 004's nine macro-expressions at full
intensity, several renders each. A backbone trained on it has seen faces,
identities and expressions before it meets the micro-expression data
(``python -m experiments.pretrain``).

Each example is one image, stored as a clip of one frame (T=1) in the shared
clip schema (``merjax.data.schema``), so the engine loads it with the same
pipeline as every other dataset (``onset = apex = offset = 0``, ``fps = 0``:
a still image has no frame rate). ``label`` is the macro-expression in seed
004's class order (``MACRO_9``), ``emotion`` its name, ``subject`` the identity
(``id0000``, ...), ``action_units`` the AUs rendered as ``synthetic_me`` writes
them (ascending, '+'-joined; '' for neutral) and ``objective_class`` the
objective class of those AUs (``merjax.data.labels.objective_class_of``).

Classes and the action units they render (each AU at a random intensity in
0.6..1.0; the combined field is scaled so that its largest landmark motion is
the render's amplitude):

=========  ===============  ====================================================
class      AUs              notes
=========  ===============  ====================================================
neutral    none             pose, lighting and noise only
anger      4 + 7 + 24       brow lowerer, lid tightener, lip pressor
disgust    9 + 15 (+ 17)    nose wrinkler, lip corner depressor; chin raiser in half
fear       1 + 2 + 4 + 5    brows raised and drawn together, upper lids raised
happy      6 + 12           cheek raiser, lip corner puller
sad        1 + 4 + 15       inner brow raiser, brow lowerer, lip corner depressor
surprise   1 + 2 + 5        brows and upper lids raised
shame      4 + 15 + 17      plus the head lowered: the renderer is 2-D, so the
                            downward pitch is a downward shift of the face
                            (``shame_drop_px``) and a slight shrink
contempt   14, one side     dimpler on one side of the face only (asymmetry 1),
                            the side drawn at random
=========  ===============  ====================================================

Intensity: the largest landmark displacement of a render is log-uniform in
``amplitude_px`` (default 4-8 px at 128x128), a full macro-expression: several
times a micro-expression's 0.5-3 px in ``synthetic_me``. The renderer's AU
fields were made for micro-expressions, and at several pixels some
combinations would close an eye or fold the mouth over, so a render's
amplitude is capped where a triangle of the face mesh would keep less than
``MIN_AREA_KEPT`` of its area (``largest_amplitude``). Measured over 30
identities x 8 expressive classes x 3 renders of ``default``: amplitudes
3.2-8.0 px, median 5.0 px; the median per class is 4.0 px for anger (the lid
tightener closes the eye first), 4.9 shame, 5.0 disgust, 5.1 happy and sad,
5.6 fear and surprise, 5.8 contempt. Bilateral expressions
are weakened on one half by up to ``max_asymmetry``. Every render has its own
pose jitter (rotation, scale, translation), brightness gain and sensor noise;
each identity keeps its shape, skin, lighting direction and texture.

Identities: identity ``k`` is drawn from ``np.random.default_rng([seed,
IDENTITY_STREAM, k])`` with ``IDENTITY_STREAM = 7``; ``synthetic_me`` draws its
subjects from ``[seed, 0, k]`` (and clips from ``[seed, 1, j]``), so no
corpus identity is a subject of any synthetic micro-expression dataset, for
any pair of seeds (the streams differ). Render ``r`` of class ``c`` of
identity ``k`` draws from ``[seed, RENDER_STREAM, k, c, r]``: one seed gives
byte-identical files, and a config with more identities or renders keeps the
others' images.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from datasets.core.rendered import RenderedBuilder
from datasets.synthetic_me import render
from datasets.synthetic_me.synthetic_me import action_unit_string
from merjax.data import labels, schema

DATASET_NAME = "synthetic_faces"
# Seed 004's nine macro-expression classes, in its order (its §4: pre-training on 3383 images).
MACRO_9 = ("neutral", "anger", "disgust", "fear", "happy", "sad", "surprise", "shame", "contempt")
IDENTITY_STREAM = 7   # synthetic_me uses 0 (subjects) and 1 (clips)
RENDER_STREAM = 8


def _fixed(*aus: int) -> Callable[[np.random.Generator], dict[int, float]]:
    """An expression that always renders ``aus``, each at a random intensity in 0.6..1.0."""
    def draw(rng: np.random.Generator) -> dict[int, float]:
        return {au: float(rng.uniform(0.6, 1.0)) for au in aus}
    return draw


def _disgust(rng: np.random.Generator) -> dict[int, float]:
    """Nose wrinkler + lip corner depressor, with the chin raiser in half the renders."""
    aus = _fixed(9, 15)(rng)
    if rng.uniform() < 0.5:
        aus[17] = float(rng.uniform(0.6, 1.0))
    return aus


# class -> its AUs (the module docstring's table); contempt's one-sidedness and shame's head drop are in
# ``render_face``.
EXPRESSIONS: Mapping[str, Callable[[np.random.Generator], dict[int, float]]] = {
    "neutral": _fixed(), "anger": _fixed(4, 7, 24), "disgust": _disgust, "fear": _fixed(1, 2, 4, 5),
    "happy": _fixed(6, 12), "sad": _fixed(1, 4, 15), "surprise": _fixed(1, 2, 5), "shame": _fixed(4, 15, 17),
    "contempt": _fixed(14),
}
UNILATERAL = frozenset({"contempt"})
HEAD_DOWN = frozenset({"shame"})
# A render's amplitude is capped where a triangle of the face mesh would keep less than this fraction of its
# neutral area (``largest_amplitude``; see the module docstring).
MIN_AREA_KEPT = 0.1


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
    """``identities`` x 9 classes x ``renders_per_class`` images; lengths in pixels of a 128x128 image."""

    identities: int = 300
    renders_per_class: int = 3
    image_size: int = 128
    seed: int = 0
    amplitude_px: tuple[float, float] = (4.0, 8.0)   # largest landmark displacement, log-uniform
    max_asymmetry: float = 0.2                       # bilateral classes: one half weakened by up to this
    rotation_degrees: float = 6.0                    # pose jitter: uniform in +-
    scale: float = 0.05                              # uniform in 1 +- scale
    translation_px: float = 4.0                      # uniform in +- per axis
    shame_drop_px: tuple[float, float] = (4.0, 8.0)  # downward shift of a shame render, uniform
    gain: tuple[float, float] = (0.8, 1.2)           # brightness, uniform
    noise_std: tuple[float, float] = (1.5, 3.0)      # grey levels, uniform

    def __post_init__(self) -> None:
        if self.identities < 1 or self.renders_per_class < 1:
            raise ValueError(f"config {self.name!r}: identities and renders_per_class must be >= 1")

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(subject_name(k) for k in range(self.identities))


DEFAULT = SyntheticFacesConfig(
    name="default",
    description="300 identities x 9 macro-expressions (seed 004's classes) x 3 renders = 8100 images, 128x128.",
)
TINY = SyntheticFacesConfig(
    name="tiny",
    description="For tests: 6 identities x 9 classes x 2 renders = 108 images, 32x32.",
    identities=6,
    renders_per_class=2,
    image_size=32,
)
CONFIGS = (DEFAULT, TINY)


def subject_name(identity_index: int) -> str:
    return f"id{identity_index:04d}"


@dataclasses.dataclass(frozen=True)
class Face:
    """One identity's neutral face: its parameters, image (float32 [S,S,3], 0..255) and control points [73,2] px."""

    identity: render.Identity
    image: np.ndarray
    control_points: np.ndarray


def sample_identity(config: SyntheticFacesConfig, identity_index: int) -> render.Identity:
    """Draws identity ``identity_index`` from its own generator stream (never one of ``synthetic_me``'s)."""
    return render.sample_identity(np.random.default_rng([config.seed, IDENTITY_STREAM, identity_index]))


def identity_face(config: SyntheticFacesConfig, identity_index: int) -> Face:
    """Draws and renders the neutral face of identity ``identity_index``."""
    identity = sample_identity(config, identity_index)
    size = config.image_size
    return Face(identity, render.render_neutral(identity, size), identity.control_points * size)


def _mirrored(field: np.ndarray) -> np.ndarray:
    """A displacement field [73,2] reflected left <-> right (each point takes its partner's motion, x negated)."""
    return field[render.MIRROR] * np.array([-1.0, 1.0])


def largest_amplitude(control_points: np.ndarray, field: np.ndarray, size: int, keep: float = MIN_AREA_KEPT,
                      steps: int = 20) -> float:
    """The largest amplitude ``a`` (pixels) at which ``control_points + a * field`` keeps every triangle of the
    renderer's mesh at ``keep`` of its neutral area or more (no fold-over, no collapsed eye), to 2**-steps of
    the search range; ``np.inf`` for a zero field."""
    if not np.any(field):
        return np.inf
    triangles = render.triangulation()
    neutral = render.signed_areas(render.with_border(control_points, size), triangles)

    def fits(amplitude: float) -> bool:
        moved = render.with_border(control_points + amplitude * field, size)
        return bool(np.all(render.signed_areas(moved, triangles) >= keep * neutral))

    low, high = 0.0, float(size)
    for _ in range(steps):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@dataclasses.dataclass(frozen=True)
class RenderedFace:
    action_units: dict[int, float]
    frames: np.ndarray       # [1,S,S,3] uint8
    landmarks: np.ndarray    # [1,68,2] float32, pixels
    expression: np.ndarray   # [68,2] float32: the AU displacement before the pose, pixels


def render_face(config: SyntheticFacesConfig, face: Face, class_index: int, render_index: int,
                identity_index: int) -> RenderedFace:
    """Renders one image of ``face`` posing class ``class_index`` (its ``render_index``-th render)."""
    rng = np.random.default_rng([config.seed, RENDER_STREAM, identity_index, class_index, render_index])
    class_name = MACRO_9[class_index]
    pixels = config.image_size / render.REFERENCE_SIZE
    action_units = EXPRESSIONS[class_name](rng)
    amplitude = np.exp(rng.uniform(*np.log(config.amplitude_px))) * pixels
    if class_name in UNILATERAL:
        field = render.expression_field(action_units, asymmetry=1.0)
        field = _mirrored(field) if rng.uniform() < 0.5 else field
    else:
        field = render.expression_field(action_units, asymmetry=rng.uniform(0.0, config.max_asymmetry))
    amplitude = min(amplitude, largest_amplitude(face.control_points, field, config.image_size))
    translation = rng.uniform(-config.translation_px, config.translation_px, 2) * pixels
    scale = 1.0 + rng.uniform(-config.scale, config.scale)
    if class_name in HEAD_DOWN:
        translation[1] += rng.uniform(*config.shame_drop_px) * pixels
        scale *= 0.97
    centre = face.control_points[[27, 30, 8]].mean(axis=0)
    pose = render.similarity(scale, rng.uniform(-config.rotation_degrees, config.rotation_degrees), translation,
                             centre)
    motion = render.ClipMotion(expression=(amplitude * field)[None], lid_closure=np.zeros(1), pose=pose[None],
                               gain=np.array([rng.uniform(*config.gain)]),
                               noise_std=float(rng.uniform(*config.noise_std)))
    rendered = render.render_clip(face.image, face.control_points, motion, rng)
    return RenderedFace(action_units, rendered.frames, rendered.landmarks, rendered.expression[0])


def to_example(config: SyntheticFacesConfig, identity_index: int, class_index: int, render_index: int,
               rendered: RenderedFace) -> tuple[str, dict[str, Any]]:
    """(clip id, the image as one example of the shared schema)."""
    subject, class_name = subject_name(identity_index), MACRO_9[class_index]
    clip = f"{subject}_{class_name}_{render_index}"
    return clip, {
        "frames": rendered.frames,
        "landmarks": rendered.landmarks,
        "label": class_index,
        "emotion": class_name,
        "subject": subject,
        "clip": clip,
        "dataset": DATASET_NAME,
        "onset": 0,
        "apex": 0,
        "offset": 0,
        "fps": 0.0,
        "action_units": action_unit_string(rendered.action_units),
        "objective_class": labels.objective_class_of(rendered.action_units),
    }


def generate_examples(config: SyntheticFacesConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (clip id, validated example) identity by identity, class by class, render by render."""
    for identity_index in range(config.identities):
        face = identity_face(config, identity_index)
        for class_index in range(len(MACRO_9)):
            for render_index in range(config.renders_per_class):
                rendered = render_face(config, face, class_index, render_index, identity_index)
                clip, example = to_example(config, identity_index, class_index, render_index, rendered)
                schema.validate(example, where=f"{DATASET_NAME}/{config.name}: {clip}")
                yield clip, example


class SyntheticFaces(RenderedBuilder):
    """Rendered face images: many identities x seed 004's nine macro-expressions; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = list(CONFIGS)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{config.description}\n\n{__doc__}",
            features=schema.features(MACRO_9, config.image_size),
        )

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return generate_examples(self.builder_config)
