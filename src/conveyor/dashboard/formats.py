"""How values read on a page: times, ages, JSON. Pure functions, used as Jinja filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from conveyor.domain.states import TERMINAL, JobState

STATE_NAMES: tuple[str, ...] = tuple(s.value for s in JobState)


def now() -> datetime:
    return datetime.now(UTC)


def when(value: datetime | None) -> str:
    """An absolute UTC time, to the second."""
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso_when(text: str | None) -> str:
    """`when` for a time stored as ISO text (the errors of a job)."""
    if not text:
        return "—"
    try:
        return when(datetime.fromisoformat(text))
    except ValueError:
        return text


def age(seconds: float | None) -> str:
    """A duration in its largest sensible unit: 42 s, 3 min, 5 h 2 min, 2 d 4 h."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def ago(value: datetime | None) -> str:
    if value is None:
        return "—"
    seconds = (now() - value).total_seconds()
    return f"in {age(-seconds)}" if seconds < 0 else f"{age(seconds)} ago"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def short_id(value: str) -> str:
    """The last 12 characters of a time-ordered id: the part that differs between jobs."""
    return value if len(value) <= 14 else "…" + value[-12:]


def is_finished(state: str) -> bool:
    return JobState(state) in TERMINAL


FILTERS = {
    "when": when,
    "iso_when": iso_when,
    "ago": ago,
    "age": age,
    "pretty_json": pretty_json,
    "short_id": short_id,
}
