"""``--rounds N``: the same systems measured N times, alternated, reported as medians.

Alternating (A, B, A, B ...) rather than repeating (A, A, B, B) spreads a passing load over
every system alike. The median of each number is taken field by field over the rounds that
measured it, so one disturbed round moves no figure; the per-round results stay in the JSON.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, TypeVar

from bench.measure import SystemResult

T = TypeVar("T")


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, bool):
        return any(present)  # e.g. timed_out: true if any round timed out
    if isinstance(first, int | float):
        middle = statistics.median(present)
        return round(middle) if isinstance(first, int) else middle
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        return _merge(present)
    return first


def _merge(items: list[T]) -> T:
    changes = {
        f.name: _median([getattr(item, f.name) for item in items])
        for f in dataclasses.fields(items[0])  # type: ignore[arg-type]
        if f.name not in {"series", "settings", "versions", "name", "label"}
    }
    return dataclasses.replace(items[0], **changes)  # type: ignore[type-var]


def medians(results: list[SystemResult]) -> list[SystemResult]:
    """One result per system name, in first-seen order, each field the median of its rounds."""
    by_name: dict[str, list[SystemResult]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result)
    merged = []
    for items in by_name.values():
        measured = [r for r in items if r.error is None] or items
        merged.append(_merge(measured) if len(measured) > 1 else measured[0])
    return merged
