"""Seed 002's region labels: per face region, the clip's class where the region takes part, else "not me".

Seed 002 (§3.2, Fig. 3) trains one CNN per face region and gives each region
its own label vector: the clip's emotion where the region takes part in it,
"not me" where it does not ("if the emotion label is 'happy' and the region is
the nose ... we change the label for this region to 'not me'"). Which region
takes part in what is read from one of two tables (``TABLES``):

``emotion``
  The seed's group's table (``arrange_label`` in github.com/MouathAb/
  AnalyseMiE-CNN_LSTM_SE, reference/seeds-public-code.md), written on the
  objective classes I..VII (indices 0..6) and kept verbatim in
  ``GROUP_KEPT_CLASSES``: regions 0 and 1 (brows + eyes) keep classes 1..6,
  region 2 (nose) keeps 3, 5, 6, regions 3 and 4 (cheeks) keep 0, 5, 6, region
  5 (mouth) keeps 0, 1, 4, 5, 6; every other class becomes "not me". Read per
  class (``OBJECTIVE_CLASS_REGIONS``): I (AU6/12) cheeks + mouth; II (AU1+2, 5,
  25, 26) brows/eyes + mouth; III (AU4, 7, 23, 17+24) brows/eyes; IV (AU9, 10)
  brows/eyes + nose; V (AU1, 15) brows/eyes + mouth; VI and VII every region.

  The table decides *where*; the label a taking-part region gets is the clip's
  own class in the clip set's class set (MEGC 2019's negative / positive /
  surprise on the composite), not the objective class: the group then dropped
  classes VI and VII and trained on I..V, while seed 002 trains on the
  composite's three classes, so a VI or VII clip stays and keeps every region.
  A clip with an objective class (CASME II and SAMM sheets, ``synthetic_me``)
  uses it. A clip without one (SMIC, whose sheet codes no AUs) uses its class
  name through ``EMOTION_OBJECTIVE_CLASSES``, the emotion each objective class
  is the FACS prototype of (its AUs above: I happiness, II surprise, III anger,
  IV disgust, V sadness, VI fear, VII others): positive -> I, surprise -> II,
  and negative -> the union of III..VI, which is every region, since VI keeps
  all. So SMIC's negative clips are never "not me": the word does not say which
  region moved, and the group's table keeps a region wherever it is unsure (VI,
  VII). A clip with neither an objective class nor a class name in that map is
  a ``UserError`` naming it.

``action_units``
  From the clip's own AU string, where the database codes one: a region takes
  part when one of the clip's AUs lies in it (``AU_PLACES``: brows/eyes, nose,
  cheeks, mouth, after reference/datasets-more.md §4 and the muscles of FACS;
  written for the boxes of the ``seed002`` template). The choices beyond that
  reference's four-region table: AU6 (orbicularis oculi, pars orbitalis) lies
  in the cheeks and the eyes (its landmark centres there: 1, 41, 31); AU12
  (zygomaticus major, running from the lip corner over the cheek) and AU13,
  AU14 in the cheeks and the mouth; AU10 in the nose and the mouth (its
  centres: the nose wings 31, 35 and the upper lip 51); 61..66 (eye positions)
  in the eyes; head positions 51..58, AU21 (neck), AU31 (jaw clencher, at the
  jaw's angle) and the visibility and gross-behaviour codes (70 and above) in
  no region. FACS's L / R prefixes (the subject's left / right, the sense of
  the template's region names) put a unilateral AU on that side's brow/eye or
  cheek region only; A (asymmetric: both sides, stronger on one) and no prefix
  put it on both. Alternatives ("or", "/") count every alternative, as the
  group's table keeps a region wherever the coder is unsure; intensities (A..E)
  and a trailing "?" are ignored.

  A clip that codes no AU (''; all of SMIC) falls back to the ``emotion`` table
  for that clip: counted, reported by ``source_counts`` and ``counts_markdown``
  and in one ``logging.warning`` line naming the databases. A UserError would
  make the table unusable on the MEGC 2019 composite, whose SMIC third has no
  AUs (issue 12: "SMIC has no AUs, so it uses the emotion table"). An AU string
  that cannot be read, or an AU number FACS does not define, is a
  ``UserError`` naming the clip and the value.

Index convention: ``RegionLabels.values[i, r]`` is in ``0..C`` with C the clip
set's number of classes: ``c < C`` is the clip's class (the region takes part),
``C`` is "not me" (``RegionLabels.not_me``). Every region shares the class names
``clip_set.class_names + ("not_me",)``, so one output size and one confusion
layout serve all six; a class a region never gets shows as a zero in
``label_counts``. Columns are the ``seed002`` template's regions in the seed's
order (``merjax.faces.regions``): right_brow_eye, left_brow_eye, nose,
right_cheek, left_cheek, mouth, named in the subject's sense (the seed's region
0, "left eye + eyebrow", is on the image's left, the subject's right). Side
matters only for the ``action_units`` table (the ``emotion`` table is the same
for both sides); a horizontal flip that swaps the paired regions' streams must
swap their label columns too.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import types
from typing import Mapping, NamedTuple

import numpy as np

from merjax.data import schema
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError
from merjax.faces.regions import REGION_TEMPLATES

REGIONS: tuple[str, ...] = REGION_TEMPLATES["seed002"].regions
NOT_ME = "not_me"
TABLES = ("emotion", "action_units")

# Sources of a clip's regions, as ``RegionLabels.sources`` names them.
FROM_OBJECTIVE_CLASS = "objective_class"
FROM_EMOTION = "emotion"
FROM_ACTION_UNITS = "action_units"

# The group's ``arrange_label``: per region (the seed's order), the objective classes (0..6 = I..VII) it keeps.
GROUP_KEPT_CLASSES: Mapping[str, frozenset[int]] = types.MappingProxyType(dict(zip(REGIONS, (
    frozenset({1, 2, 3, 4, 5, 6}),      # region 0, brows + eye
    frozenset({1, 2, 3, 4, 5, 6}),      # region 1, brows + eye
    frozenset({3, 5, 6}),               # region 2, nose
    frozenset({0, 5, 6}),               # region 3, cheek
    frozenset({0, 5, 6}),               # region 4, cheek
    frozenset({0, 1, 4, 5, 6}),         # region 5, mouth
))))
# The same table read per class: the regions that take part in objective class I..VII.
OBJECTIVE_CLASS_REGIONS: tuple[frozenset[str], ...] = tuple(
    frozenset(region for region in REGIONS if index in GROUP_KEPT_CLASSES[region])
    for index in range(len(schema.OBJECTIVE_CLASSES)))

# Class names (lower case) -> the objective classes whose regions they take, for clips without an objective class.
_I, _II, _III, _IV, _V, _VI, _VII = range(len(schema.OBJECTIVE_CLASSES))
EMOTION_OBJECTIVE_CLASSES: Mapping[str, tuple[int, ...]] = types.MappingProxyType({
    "happiness": (_I,), "positive": (_I,),
    "surprise": (_II,),
    "anger": (_III,),
    "disgust": (_IV,),
    "sadness": (_V,),
    "fear": (_VI,),
    "negative": (_III, _IV, _V, _VI),
    "others": (_VII,), "other": (_VII,),
})

# Where an AU lies: places, of which brow_eye and cheek come in a right and a left region.
BROW_EYE, NOSE, CHEEK, MOUTH = "brow_eye", "nose", "cheek", "mouth"
_SIDED_REGIONS = {BROW_EYE: {"R": ("right_brow_eye",), "L": ("left_brow_eye",)},
                  CHEEK: {"R": ("right_cheek",), "L": ("left_cheek",)}}
_NO_PLACE: tuple[str, ...] = ()
AU_PLACES: Mapping[int, tuple[str, ...]] = types.MappingProxyType({
    **{au: (BROW_EYE,) for au in (1, 2, 4, 5, 7, 41, 42, 43, 44, 45, 46, 61, 62, 63, 64, 65, 66)},
    6: (CHEEK, BROW_EYE),
    **{au: (NOSE,) for au in (9, 38, 39, 40)},
    10: (NOSE, MOUTH),
    11: (CHEEK,),
    **{au: (CHEEK, MOUTH) for au in (12, 13, 14, 33, 34, 35)},
    **{au: (MOUTH,) for au in (8, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 32, 36, 37)},
    **{au: _NO_PLACE for au in (21, 31, 50, 51, 52, 53, 54, 55, 56, 57, 58, 69, *range(70, 99))},
})


class ActionUnit(NamedTuple):
    """One AU of a coding string: its FACS number and side ('L', 'R', or None for both)."""
    number: int
    side: str | None


_AU_TOKEN = re.compile(r"(?:AU\s*)?([LRA])?(\d{1,2})([A-E])?\??", re.IGNORECASE)
_INTENSITY = re.compile(r"[A-E]\??", re.IGNORECASE)   # '10A/B': the B is a second intensity of AU10
_ALTERNATIVES = re.compile(r"\s+or\s+|/", re.IGNORECASE)
_EXAMPLES = "e.g. '4+L10', 'R12', '(R6 or R12)+R15', '10A/B'"


def parse_action_units(text: str, where: str) -> tuple[ActionUnit, ...]:
    """The AUs of a coding-sheet string, every alternative included; () for '' (no AU coded).

    Args:
      text: the database's AU string (schema ``action_units``), e.g. ``'(R6 or R12)+R15'``.
      where: the clip it belongs to, for messages.

    Raises:
      UserError: for a string or an AU number that cannot be read, naming ``where`` and the value.
    """
    if not text.strip():
        return ()
    units = []
    for group in text.replace("(", " ").replace(")", " ").split("+"):
        alternatives = [token.strip() for token in _ALTERNATIVES.split(group.strip())]
        for position, token in enumerate(alternatives):
            match = _AU_TOKEN.fullmatch(token)
            if match is None and position > 0 and _INTENSITY.fullmatch(token):
                continue
            if match is None:
                raise UserError(f"{where}: action units {text!r} cannot be read at {token!r} ({_EXAMPLES}); "
                                "correct the sheet's cell, or use the emotion table (target region_labels_emotion)")
            prefix, number = (match.group(1) or "").upper(), int(match.group(2))
            if number not in AU_PLACES:
                raise UserError(f"{where}: action units {text!r} hold AU{number}, which is not a FACS action unit "
                                "merjax places (merjax.data.region_labels.AU_PLACES); correct the sheet's cell")
            units.append(ActionUnit(number, prefix if prefix in ("L", "R") else None))
    return tuple(units)


def action_unit_regions(units: tuple[ActionUnit, ...]) -> frozenset[str]:
    """The ``seed002`` regions the AUs lie in (``AU_PLACES``; a side picks one of a pair)."""
    regions: set[str] = set()
    for unit in units:
        for place in AU_PLACES[unit.number]:
            if place not in _SIDED_REGIONS:
                regions.add(place)
            elif unit.side is None:
                regions.update(*_SIDED_REGIONS[place].values())
            else:
                regions.update(_SIDED_REGIONS[place][unit.side])
    return frozenset(regions)


@dataclasses.dataclass(frozen=True)
class RegionLabels:
    """Per clip and region, the clip's class or "not me" (the module docstring's index convention).

    Attributes:
      table: the table the labels come from (``TABLES``).
      regions: the columns, the ``seed002`` regions in the seed's order.
      class_names: the clip set's class names and then ``NOT_ME``, shared by every region.
      values: [num_clips, len(regions)] int32 in ``0..len(class_names) - 1``.
      sources: [num_clips] str, what decided each clip's regions: ``FROM_OBJECTIVE_CLASS``,
        ``FROM_EMOTION`` (its class name) or ``FROM_ACTION_UNITS``.
      datasets: [num_clips] str, each clip's database (for ``source_counts``).
    """
    table: str
    regions: tuple[str, ...]
    class_names: tuple[str, ...]
    values: np.ndarray
    sources: np.ndarray
    datasets: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def not_me(self) -> int:
        return len(self.class_names) - 1


def _clip_name(clip_set: ClipSet, index: int) -> str:
    return f"clip {clip_set.datasets[index]}/{clip_set.clip_ids[index]}"


def _emotion_regions(clip_set: ClipSet, index: int) -> tuple[frozenset[str], str]:
    """A clip's regions by the group's table: from its objective class, else from its class name."""
    objective_class = int(clip_set.objective_classes[index])
    if 0 <= objective_class < len(OBJECTIVE_CLASS_REGIONS):
        return OBJECTIVE_CLASS_REGIONS[objective_class], FROM_OBJECTIVE_CLASS
    if objective_class != schema.UNKNOWN_OBJECTIVE_CLASS:
        raise UserError(f"{_clip_name(clip_set, index)}: objective class {objective_class} is not one of 0..6 "
                        f"(I..VII) or {schema.UNKNOWN_OBJECTIVE_CLASS} (unknown); rebuild the prepared dataset")
    class_name = clip_set.class_names[int(clip_set.labels[index])]
    classes = EMOTION_OBJECTIVE_CLASSES.get(class_name.strip().lower())
    if classes is None:
        raise UserError(f"{_clip_name(clip_set, index)} has no objective class and its class {class_name!r} is none "
                        f"of the emotions the region table knows ({sorted(EMOTION_OBJECTIVE_CLASSES)}); use a class "
                        "set of those emotions (e.g. --config.data.name=megc2019/composite) or a database that "
                        "codes objective classes")
    return frozenset().union(*(OBJECTIVE_CLASS_REGIONS[c] for c in classes)), FROM_EMOTION


def region_labels(clip_set: ClipSet, table: str) -> RegionLabels:
    """Every clip's label per ``seed002`` region from ``table`` (``TABLES``; see the module docstring).

    Raises:
      UserError: for an unknown table; a clip the table cannot place (named with its value).
    """
    if table not in TABLES:
        raise UserError(f"unknown region label table {table!r}; choose from {list(TABLES)}")
    not_me = clip_set.num_classes
    values = np.full((len(clip_set), len(REGIONS)), not_me, np.int32)
    sources = []
    for index in range(len(clip_set)):
        units = (parse_action_units(str(clip_set.action_units[index]), _clip_name(clip_set, index))
                 if table == "action_units" else ())
        if units:
            regions, source = action_unit_regions(units), FROM_ACTION_UNITS
        else:
            regions, source = _emotion_regions(clip_set, index)
        values[index, [column for column, region in enumerate(REGIONS) if region in regions]] = clip_set.labels[index]
        sources.append(source)
    labels = RegionLabels(table=table, regions=REGIONS, class_names=(*clip_set.class_names, NOT_ME), values=values,
                          sources=np.asarray(sources, dtype=str), datasets=np.asarray(clip_set.datasets, dtype=str))
    if table == "action_units":
        fallback = collections.Counter(labels.datasets[labels.sources != FROM_ACTION_UNITS].tolist())
        if fallback:
            logging.warning("region labels from action units: %d clip(s) code no AU and use the emotion table (%s)",
                            fallback.total(), ", ".join(f"{name}: {count}" for name, count in sorted(fallback.items())))
    return labels


def label_counts(labels: RegionLabels) -> dict[str, dict[str, int]]:
    """Clips per region and class: {region: {class name: count}}, both in order, every class listed."""
    return {region: {name: int(count) for name, count in zip(
                labels.class_names, np.bincount(labels.values[:, column], minlength=labels.num_classes))}
            for column, region in enumerate(labels.regions)}


def source_counts(labels: RegionLabels) -> dict[str, dict[str, int]]:
    """Clips per database and source of their regions: {dataset: {source: count}}, every source listed."""
    counts: dict[str, collections.Counter] = {}
    for dataset, source in zip(labels.datasets, labels.sources):
        counts.setdefault(str(dataset), collections.Counter())[str(source)] += 1
    return {dataset: {source: counter[source] for source in (FROM_ACTION_UNITS, FROM_OBJECTIVE_CLASS, FROM_EMOTION)}
            for dataset, counter in sorted(counts.items())}


def counts_markdown(labels: RegionLabels) -> str:
    """``label_counts`` as a markdown table (region x class), then where the regions came from per database and
    how many clips no region takes part in."""
    counts = label_counts(labels)
    lines = [f"Region labels ({labels.table} table), clips per region and class:", "",
             "| region | " + " | ".join(labels.class_names) + " |",
             "|---|" + "---:|" * labels.num_classes]
    lines += [f"| {region} | " + " | ".join(str(count) for count in row.values()) + " |"
              for region, row in counts.items()]
    lines += ["", "Clips by source of their regions:"]
    lines += [f"- {dataset}: " + ", ".join(f"{source} {count}" for source, count in row.items())
              for dataset, row in source_counts(labels).items()]
    no_region = int(np.all(labels.values == labels.not_me, axis=1).sum())
    lines += ["", f"Clips in which no region takes part (every region {NOT_ME}): {no_region} of {len(labels.values)}"]
    return "\n".join(lines)
