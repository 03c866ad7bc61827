"""Label maps: each database's own emotion words mapped onto class sets.

Class sets are tuples of class names in label order. A label map sends a
database's emotion word (compared case-insensitively) to a class name; words
absent from a map are excluded by the caller, which must count and report them.

The maps, written down once (reference/datasets.md §4, seeds 003 and 004):

==============  ==========================================================
map             emotion words -> class
==============  ==========================================================
``native``      every class is the database's own word (CASME II: the usual
                5 classes happiness / disgust / repression / surprise /
                others, fear and sadness excluded; SAMM: its 8 words; SMIC:
                negative / positive / surprise [+ non_micro])
``megc3``       MEGC 2019: negative = repression, anger, contempt, disgust,
                fear, sadness (and SMIC negative); positive = happiness (and
                SMIC positive); surprise = surprise. Others excluded.
``4class``      seed 003 (and seed 004's target space): positive = happiness;
                negative = disgust, repression, anger, sadness, fear;
                surprise = surprise; others = others / other, contempt.
==============  ==========================================================

The MEGC 2019 composite itself is defined by its official sample list, not by
``megc3``: the list also leaves out a few CASME II clips the map would keep
(reference/datasets.md §4.3).

Objective classes (Davison et al., 2018) group clips by their action units
instead of an emotion word: ``OBJECTIVE_CLASS_AUS`` lists the AU combinations
of classes I..VI (reference/datasets-more.md §3); class VII is "others".
CASME II and SAMM give each clip's class in their sheets; ``synthetic_me``,
which knows the AUs it rendered, derives it with ``objective_class_of``.
"""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

from merjax.data import schema

SMIC_3 = ("negative", "positive", "surprise")
# Seed 001 trains on SMIC-HS with the non-micro-expression clips as a 4th class.
SMIC_4 = ("negative", "positive", "surprise", "non_micro")
# MEGC 2019 composite: 0 negative, 1 positive, 2 surprise.
MEGC_3 = ("negative", "positive", "surprise")
FOUR_CLASS = ("negative", "positive", "surprise", "others")
CASME2_5 = ("happiness", "disgust", "repression", "surprise", "others")
SAMM_8 = ("anger", "contempt", "disgust", "fear", "happiness", "other", "sadness", "surprise")

MEGC3_MAP: Mapping[str, str] = {
    **{word: "negative" for word in ("negative", "repression", "anger", "contempt", "disgust", "fear",
                                     "sadness")},
    "positive": "positive", "happiness": "positive",
    "surprise": "surprise",
}
FOUR_CLASS_MAP: Mapping[str, str] = {
    **{word: "negative" for word in ("negative", "disgust", "repression", "anger", "sadness", "fear")},
    "positive": "positive", "happiness": "positive",
    "surprise": "surprise",
    **{word: "others" for word in ("others", "other", "contempt")},
}


def identity_map(classes: Sequence[str]) -> dict[str, str]:
    """The ``native`` map of a class set: each class is its own emotion word."""
    return {name: name for name in classes}


def label_of(emotion: str, mapping: Mapping[str, str], classes: Sequence[str]) -> int | None:
    """Maps an emotion word to a label index, or None when the word is excluded."""
    name = mapping.get(emotion.strip().lower())
    return None if name is None else list(classes).index(name)


def mapped_counts(emotion_counts: Mapping[str, int], mapping: Mapping[str, str],
                  classes: Sequence[str]) -> dict[str, int]:
    """Per-class totals that ``emotion_counts`` (word -> clips) give under ``mapping``."""
    totals = {name: 0 for name in classes}
    for word, count in emotion_counts.items():
        name = mapping.get(word.strip().lower())
        if name is not None:
            totals[name] += count
    return totals


def _combinations(*written: str) -> frozenset[frozenset[int]]:
    """AU combinations written as in the table (``'6+7+12'``) as sets of AU numbers."""
    return frozenset(frozenset(int(au) for au in combination.split("+")) for combination in written)


# The AU combinations of objective classes I..VI (Davison et al., 2018, as tabled in
# reference/datasets-more.md §3); index = the schema's objective_class. Class VII (index 6) is "others".
OBJECTIVE_CLASS_AUS: tuple[frozenset[frozenset[int]], ...] = (
    _combinations("6", "12", "6+12", "6+7+12", "7+12"),                                        # I
    _combinations("1+2", "5", "25", "1+2+25", "25+26", "5+24"),                                # II
    _combinations("23", "4", "4+7", "4+5", "4+5+7", "17+24", "4+6+7", "4+38"),                # III
    _combinations("10", "9", "4+9", "4+40", "4+5+40", "4+7+9", "4+9+17", "4+7+10", "4+5+7+9",  # IV
                  "7+10"),
    _combinations("1", "15", "1+4", "6+15", "15+17"),                                          # V
    _combinations("1+2+4", "20"),                                                              # VI
)
OTHERS_OBJECTIVE_CLASS = schema.OBJECTIVE_CLASSES.index("VII")


def objective_class_of(action_units: Collection[int]) -> int:
    """The objective class index (0..6 for I..VII) of a clip's set of AU numbers (L/R and A-E removed).

    The class whose table lists exactly this set (I..VI), else VII ("others")
    for any other non-empty set; -1 (unknown) for no AU at all: a clip without
    an expression has no objective class.
    """
    units = frozenset(action_units)
    if not units:
        return schema.UNKNOWN_OBJECTIVE_CLASS
    return next((index for index, combinations in enumerate(OBJECTIVE_CLASS_AUS) if units in combinations),
                OTHERS_OBJECTIVE_CLASS)
