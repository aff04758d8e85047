"""Cron expressions in a time zone: validation and next fire times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

from conveyor.errors import InvalidInput

# The zones a new schedule may name: the IANA list of this server's tz database. ZoneInfo
# also opens files of that database that are not zones of the list (`posixrules`), which the
# API's schema (an enum of this list) and every other door refuse alike.
TIME_ZONES = frozenset(available_timezones())


def validate(expression: str, timezone: str) -> None:
    """Valid syntax, a known zone, and at least one fire time (`0 0 31 2 *` never fires)."""
    if not croniter.is_valid(expression):
        raise InvalidInput(f"not a valid cron expression: {expression!r}", field="cron")
    if timezone not in TIME_ZONES:
        raise InvalidInput(f"unknown time zone: {timezone!r}", field="timezone")
    try:
        croniter(expression, datetime.now(UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidInput(
            f"the cron expression never fires: {expression!r}", field="cron"
        ) from None


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC; wall-clock rules of the zone apply."""
    local = after.astimezone(_zone(timezone))
    fire: datetime = croniter(expression, local).get_next(datetime)
    return fire.astimezone(UTC)


def fires_since(
    expression: str, timezone: str, first: datetime, until: datetime, limit: int
) -> list[datetime]:
    """The latest `limit` fire times from `first` (a fire time: the schedule's next one) up to
    `until` included, oldest first, in UTC. Walks back from `until`, so a long outage costs
    `limit` steps, not one per missed time."""
    if limit <= 0 or first > until:
        return []
    zone = _zone(timezone)
    # croniter's get_prev is strictly before its start: start a microsecond after `until`.
    walk = croniter(expression, (until + timedelta(microseconds=1)).astimezone(zone))
    latest: list[datetime] = []
    while len(latest) < limit:
        fire: datetime = walk.get_prev(datetime).astimezone(UTC)
        if fire <= first:
            break
        latest.append(fire)
    if len(latest) < limit:
        latest.append(first)
    return latest[::-1]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone: {name!r}", field="timezone") from exc
