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
"""

from __future__ import annotations

from typing import Mapping, Sequence

SMIC_3 = ("negative", "positive", "surprise")
# Seed 001 trains on SMIC-HS with the non-micro-expression clips as a 4th class.
SMIC_4 = ("negative", "positive", "surprise", "non_micro")
# MEGC 2019 composite: 0 negative, 1 positive, 2 surprise.
MEGC_3 = ("negative", "positive", "surprise")
FOUR_CLASS = ("negative", "positive", "surprise", "others")
CASME2_5 = ("happiness", "disgust", "repression", "surprise", "others")
SAMM_8 = ("anger", "contempt", "disgust", "fear", "happiness", "other", "sadness", "surprise")

CLASS_SETS: Mapping[str, tuple[str, ...]] = {
    "smic3": SMIC_3,
    "smic4": SMIC_4,
    "megc3": MEGC_3,
    "4class": FOUR_CLASS,
    "casme2_5": CASME2_5,
    "samm8": SAMM_8,
}

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


def class_set(name: str) -> tuple[str, ...]:
    """Returns the class names of a named class set; raises KeyError listing the known ones."""
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise KeyError(f"unknown class set {name!r}; known: {sorted(CLASS_SETS)}") from None


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
