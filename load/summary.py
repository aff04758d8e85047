"""The end-of-run table: one row per call, grouped by scenario, with requests/s,
p50/p95/p99 and errors (and how many of them were 429s, so a server left with its default
rate limits is told apart from a failing one).

Reads the JSON that `load.locustfile` writes when the run stops; no Locust import, so the
tests and `load.run` can use it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCENARIOS = ("sign-in", "submit one", "submit batch", "wait over SSE", "list", "dashboard")
TOTAL = "Aggregated"  # Locust's name for the line over every call


@dataclass(frozen=True)
class Row:
    scenario: str
    call: str
    requests: int
    per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    limited: int  # of the errors, answered 429


@dataclass(frozen=True)
class Summary:
    rows: list[Row]
    errors: list[tuple[str, str, int]]  # call, what went wrong, how often


def read_summary(path: Path) -> Summary:
    """The rows in scenario order, the line over every call last (scenario "all")."""
    data = json.loads(path.read_text())
    errors = [(e["name"], e["error"], int(e["occurrences"])) for e in data["errors"]]
    limited: Counter[str] = Counter()
    for name, error, times in errors:
        if "429" in error:
            limited[name] += times
            limited[TOTAL] += times
    rows = [_row(call, limited) for call in data["calls"]]
    order = {s: i for i, s in enumerate((*SCENARIOS, "all"))}
    return Summary(sorted(rows, key=lambda r: order.get(r.scenario, len(order))), errors)


def _row(call: dict[str, Any], limited: Counter[str]) -> Row:
    name = str(call["name"])
    scenario, _, what = name.partition(": ")
    if name == TOTAL:
        scenario, what = "all", "every call"
    return Row(
        scenario=scenario,
        call=what,
        requests=int(call["requests"]),
        per_s=float(call["per_s"]),
        p50_ms=float(call["p50"] or 0),
        p95_ms=float(call["p95"] or 0),
        p99_ms=float(call["p99"] or 0),
        errors=int(call["failures"]),
        limited=limited[name],
    )


def requests_by_scenario(rows: list[Row]) -> dict[str, int]:
    """Requests each scenario made (every scenario named, 0 when it made none)."""
    made = dict.fromkeys(SCENARIOS, 0)
    for row in rows:
        if row.scenario in made:
            made[row.scenario] += row.requests
    return made


HEADER = ("scenario", "call", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors (429)")


def _cells(row: Row) -> tuple[str, ...]:
    errors = f"{row.errors} ({row.limited})" if row.limited else str(row.errors)
    return (
        row.scenario,
        row.call,
        str(row.requests),
        f"{row.per_s:.1f}",
        f"{row.p50_ms:g}",
        f"{row.p95_ms:g}",
        f"{row.p99_ms:g}",
        errors,
    )


def text_table(rows: list[Row]) -> str:
    """Aligned columns for the terminal."""
    lines = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def markdown_table(rows: list[Row]) -> str:
    """The same table for docs (docs/deploy.md, "Load")."""
    lines = [HEADER, ("---",) * 2 + ("---:",) * 6, *(_cells(r) for r in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
