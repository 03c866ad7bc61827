"""Label maps: each database's own emotion words mapped onto class sets.

Class sets are tuples of class names in label order. A map from emotion words
to class names is a plain dict; words absent from the map are excluded by the
caller, which must count and report them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

SMIC_3 = ("negative", "positive", "surprise")
# Seed 001 trains on SMIC-HS with the non-micro-expression clips as a 4th class.
SMIC_4 = ("negative", "positive", "surprise", "non_micro")
# MEGC 2019 composite: 0 negative, 1 positive, 2 surprise.
MEGC_3 = ("negative", "positive", "surprise")

CLASS_SETS: Mapping[str, tuple[str, ...]] = {
    "smic3": SMIC_3,
    "smic4": SMIC_4,
    "megc3": MEGC_3,
}


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
