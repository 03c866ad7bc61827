"""A log of every fix and skip a builder makes while reading a database.

Licensed micro-expression databases have quirks (unpadded subject folders,
frame-number gaps, an apex of '/', stray files, absent subjects, faces not
found). A builder never crashes on them and never drops data silently: it
records each one here under a kind, as either ``fixed`` (the data was kept,
repaired) or ``skipped`` (the data was left out). The log is printed at the end
of the build and stored with the dataset (``metadata.json``), together with the
check of per-class counts against the database's known totals. It also lists
the annotation files the build read (coding sheets), so that the prepared copy
can be stamped with their digests and refused once they change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

EXAMPLES_KEPT = 5   # examples stored per kind; the count is always exact
ACTIONS = ("fixed", "skipped")


@dataclasses.dataclass
class QuirkKind:
    """All occurrences of one kind of quirk: their number and the first few places."""

    action: str
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)


class QuirkLog:
    """Counts quirks by kind; ``fixed`` keeps the data, ``skipped`` leaves it out."""

    def __init__(self) -> None:
        self._kinds: dict[str, QuirkKind] = {}
        self.annotation_files: list[Path] = []

    def read_annotation(self, path: Path) -> None:
        """Records an annotation file (a coding sheet) whose content the build depends on."""
        self.annotation_files.append(path)

    def fixed(self, kind: str, where: str, detail: str = "") -> None:
        """Records a quirk that was repaired; the data is kept."""
        self._add("fixed", kind, where, detail)

    def skipped(self, kind: str, where: str, detail: str = "") -> None:
        """Records data that was left out and why."""
        self._add("skipped", kind, where, detail)

    def _add(self, action: str, kind: str, where: str, detail: str) -> None:
        entry = self._kinds.setdefault(kind, QuirkKind(action))
        if entry.action != action:
            raise ValueError(f"quirk kind {kind!r} is recorded as {entry.action!r}, not {action!r}")
        entry.count += 1
        if len(entry.examples) < EXAMPLES_KEPT:
            entry.examples.append(f"{where}: {detail}" if detail else where)

    def count(self, kind: str) -> int:
        """How many times ``kind`` occurred (0 if never)."""
        entry = self._kinds.get(kind)
        return entry.count if entry else 0

    def kinds(self) -> dict[str, QuirkKind]:
        return dict(self._kinds)

    def merge(self, other: "QuirkLog") -> None:
        """Adds ``other``'s counts and examples to this log."""
        for kind, entry in other._kinds.items():
            mine = self._kinds.setdefault(kind, QuirkKind(entry.action))
            if mine.action != entry.action:
                raise ValueError(f"quirk kind {kind!r} is {mine.action!r} here and {entry.action!r} there")
            mine.count += entry.count
            mine.examples.extend(entry.examples[:EXAMPLES_KEPT - len(mine.examples)])

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready ``{kind: {action, count, examples}}``, sorted by kind."""
        return {kind: dataclasses.asdict(self._kinds[kind]) for kind in sorted(self._kinds)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> "QuirkLog":
        log = cls()
        for kind, entry in data.items():
            if entry["action"] not in ACTIONS:
                raise ValueError(f"quirk {kind!r}: unknown action {entry['action']!r}")
            log._kinds[kind] = QuirkKind(entry["action"], int(entry["count"]), list(entry["examples"]))
        return log

    def lines(self) -> list[str]:
        """One line per kind, skips first, e.g. ``skipped  no_face  x3  (s1_ne_01: ...; ...)``."""
        ordered = sorted(self._kinds.items(), key=lambda item: (item[1].action != "skipped", item[0]))
        return [f"{entry.action:<8} {kind} x{entry.count}  ({'; '.join(entry.examples)}"
                f"{'; ...' if entry.count > len(entry.examples) else ''})"
                for kind, entry in ordered]


def count_differences(written: Mapping[str, int], expected: Mapping[str, int]) -> list[str]:
    """Plain statements of how written counts differ from the known totals ([] if equal).

    Only the names in ``expected`` are compared; with more than one, their sum is compared too.
    """
    differences = []
    for name, want in expected.items():
        have = written.get(name, 0)
        if have != want:
            differences.append(f"{name}: {have} written, {want} expected ({have - want:+d})")
    total = sum(written.get(name, 0) for name in expected)
    total_expected = sum(expected.values())
    if differences and len(expected) > 1:
        differences.append(f"total: {total} written, {total_expected} expected ({total - total_expected:+d})")
    return differences
