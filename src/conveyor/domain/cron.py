"""Cron expressions in a time zone: validation and next fire times."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from conveyor.errors import InvalidInput


def validate(expression: str, timezone: str) -> None:
    """Valid syntax, a known zone, and at least one fire time (`0 0 31 2 *` never fires)."""
    if not croniter.is_valid(expression):
        raise InvalidInput(f"not a valid cron expression: {expression!r}", field="cron")
    _zone(timezone)
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


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone: {name!r}", field="timezone") from exc
