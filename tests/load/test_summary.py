"""The load suite's table: rows in scenario order, 429s told apart from other errors."""

from __future__ import annotations

import json
from pathlib import Path

from load.summary import markdown_table, read_summary, requests_by_scenario, text_table


def _call(name: str, requests: int, failures: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "method": "GET",
        "requests": requests,
        "failures": failures,
        "per_s": requests / 10,
        "p50": 10,
        "p95": 40,
        "p99": 90,
    }


def test_rows_follow_the_scenarios_and_count_429s_apart(tmp_path: Path) -> None:
    figures = tmp_path / "run.json"
    figures.write_text(
        json.dumps(
            {
                "calls": [
                    _call("dashboard: GET /dashboard/", 5),
                    _call("submit one: POST /jobs", 40, failures=3),
                    _call("Aggregated", 45, failures=3),
                ],
                "errors": [
                    {"name": "submit one: POST /jobs", "error": "HTTPError('429 Client Error')",
                     "occurrences": 2},
                    {"name": "submit one: POST /jobs", "error": "HTTPError('500 Server Error')",
                     "occurrences": 1},
                ],
            }
        )
    )  # fmt: skip
    summary = read_summary(figures)
    assert [(r.scenario, r.call) for r in summary.rows] == [
        ("submit one", "POST /jobs"),
        ("dashboard", "GET /dashboard/"),
        ("all", "every call"),
    ]
    assert [(r.errors, r.limited) for r in summary.rows] == [(3, 2), (0, 0), (3, 2)]
    made = requests_by_scenario(summary.rows)
    assert made["submit one"] == 40 and made["dashboard"] == 5 and made["sign-in"] == 0
    assert "3 (2)" in text_table(summary.rows)
    assert "| submit one | POST /jobs | 40 | 4.0 | 10 | 40 | 90 | 3 (2) |" in markdown_table(
        summary.rows
    )
