"""Retry backoff, cron next-fire and id ordering."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest

from conveyor.domain import cron
from conveyor.domain.ids import uuid7
from conveyor.domain.retry import RetryPolicy
from conveyor.errors import InvalidInput


def test_backoff_doubles_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base=1, factor=2, cap=10, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 8, 10]
    jittered = RetryPolicy(base=4, jitter=0.25)
    delays = {jittered.delay(1, random.Random(seed)) for seed in range(50)}
    assert len(delays) > 40 and all(3 <= d <= 5 for d in delays)


def test_cron_next_fire_in_a_time_zone_across_dst() -> None:
    # New York leaves DST on 2026-11-01: 09:00 local is 13:00 UTC before and 14:00 after.
    before = cron.next_fire("0 9 * * *", "America/New_York", datetime(2026, 10, 30, 12, tzinfo=UTC))
    after = cron.next_fire("0 9 * * *", "America/New_York", datetime(2026, 11, 2, 12, tzinfo=UTC))
    assert (before.hour, after.hour) == (13, 14)
    assert (
        cron.next_fire("*/15 * * * *", "UTC", datetime(2026, 1, 1, 0, 0, tzinfo=UTC)).minute == 15
    )


@pytest.mark.parametrize(
    ("expr", "zone"),
    # posixrules: a file ZoneInfo opens that is not a zone of the list (the API's enum)
    [("not cron", "UTC"), ("* * * * *", "Nowhere/City"), ("* * * * *", "posixrules")],
)
def test_cron_validation(expr: str, zone: str) -> None:
    with pytest.raises(InvalidInput):
        cron.validate(expr, zone)


def test_uuid7_ids_are_unique_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(i[14] == "7" for i in ids[:10])
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 7 for i in ids[:100])
