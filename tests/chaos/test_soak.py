"""`make soak` in miniature: twenty seconds of its load on SQLite, sampled every two.

It guards that the soak runs end to end (processes, load, sampling, the drain and the
count), not its verdict on memory or latency, which twenty seconds on a busy machine cannot
give. What it asserts holds however slow the machine is: every process was sampled, every
acknowledged job ran once, and nothing failed or exited.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos.soak import soak

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
async def test_a_short_soak_samples_every_process_and_loses_nothing(tmp_path: Path) -> None:
    report = await soak(
        "sqlite", tmp_path, None, minutes=20 / 60, sample_seconds=2.0, rate=10.0, quiet=True
    )
    names = {"api-1", "worker-2", "worker-3", "scheduler-4", "relay-5"}
    assert report.samples, report.table
    assert all(set(x.rss_mib) == names for x in report.samples)
    assert all(mib > 0 for x in report.samples for mib in x.rss_mib.values()), report.table
    o = report.outcome
    assert o.acked > 0, report.table
    assert (o.lost, o.duplicates, o.dead, o.stuck, o.exits, o.errors) == (0, 0, 0, 0, [], {}), (
        report.table
    )
    assert "verdict" in report.table
