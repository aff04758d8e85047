"""A unique declaration: what it accepts, and the key it gives a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.domain.flow import DEFAULT_UNIQUE_STATES, Unique
from conveyor.domain.states import JobState
from conveyor.errors import ConfigurationError

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def key(unique: Unique, payload: dict[str, object], owner: str = "ada", now: datetime = NOW) -> str:
    return unique.key(owner_id=owner, type_name="t", payload=payload, now=now)


@pytest.mark.parametrize(
    "states",
    [
        frozenset({JobState.QUEUED}),
        DEFAULT_UNIQUE_STATES - {JobState.RETRYING},
        frozenset({JobState.COMPLETED}),
    ],
)
def test_states_must_cover_every_live_state(states: frozenset[JobState]) -> None:
    with pytest.raises(ConfigurationError, match="every live state"):
        Unique(states=states)


def test_terminal_states_may_be_added_and_bad_options_are_refused() -> None:
    Unique(states=DEFAULT_UNIQUE_STATES | {JobState.COMPLETED, JobState.CANCELLED})
    for bad in ({"period_s": 0}, {"fields": ()}, {"fields": ("a", "a")}, {"fields": ("",)}):
        with pytest.raises(ConfigurationError):
            Unique(**bad)


def test_the_key_is_the_chosen_fields_the_owner_and_the_type() -> None:
    by_order = Unique(fields=("order",))
    assert key(by_order, {"order": 1, "note": "a"}) == key(by_order, {"note": "b", "order": 1})
    assert key(by_order, {"order": 1}) != key(by_order, {"order": 2})
    assert key(by_order, {"order": 1}) != key(by_order, {"order": 1}, owner="bob")
    assert key(by_order, {}) == key(by_order, {"order": None})  # missing counts as null
    whole = Unique()
    assert key(whole, {"a": 1, "b": 2}) == key(whole, {"b": 2, "a": 1})
    assert key(whole, {"a": 1}) != key(whole, {"a": 1, "b": 2})
    assert len(key(whole, {})) == 64


def test_a_period_changes_the_key_at_its_boundaries() -> None:
    hourly = Unique(fields=("order",), period_s=3600)
    start = NOW.replace(minute=0)
    assert key(hourly, {"order": 1}, now=start) == key(
        hourly, {"order": 1}, now=start + timedelta(minutes=59)
    )
    assert key(hourly, {"order": 1}, now=start) != key(
        hourly, {"order": 1}, now=start + timedelta(hours=1)
    )
    # Without a period, time plays no part.
    assert key(Unique(), {}, now=start) == key(Unique(), {}, now=start + timedelta(days=9))
