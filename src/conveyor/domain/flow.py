"""Flow control as a job type declares it: concurrency limits, rate limits, fairness, uniqueness.

A declaration names where its key comes from (`KeySource`); the key is evaluated once, when a
job is submitted, and stored with the job: the claim never looks at the payload again
(docs/flow-control.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.domain.states import JobState
from conveyor.errors import ConfigurationError, InvalidInput

# Where a key comes from: "" (one key for every job: a global limit), "owner", "queue", "type",
# or "payload.<field>[.<field>...]" (a field of the payload; a missing field is refused at submit).
KeySource = str
_PLAIN_SOURCES = frozenset({"", "owner", "queue", "type"})
MAX_KEY_LENGTH = 200
LIMIT_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def check_name(name: str) -> None:
    if not re.fullmatch(LIMIT_NAME_PATTERN, name):
        raise ConfigurationError(f"limit name {name!r} must match {LIMIT_NAME_PATTERN}")


def check_source(source: KeySource, what: str) -> None:
    """A declaration's key source, checked when the job type is declared."""
    if source in _PLAIN_SOURCES:
        return
    prefix, _, path = source.partition(".")
    if prefix != "payload" or not path or any(not part for part in path.split(".")):
        raise ConfigurationError(
            f"{what}: key {source!r} is not one of '', 'owner', 'queue', 'type', 'payload.<field>'"
        )


def evaluate_key(
    source: KeySource, *, owner_id: str, queue: str, type_name: str, payload: dict[str, Any]
) -> str:
    """The key a job gets from `source` (at submit; InvalidInput if its payload lacks it)."""
    if source == "":
        return ""
    if source == "owner":
        return owner_id
    if source == "queue":
        return queue
    if source == "type":
        return type_name
    value: Any = payload
    for part in source.partition(".")[2].split("."):
        if not isinstance(value, dict) or part not in value:
            raise InvalidInput(f"the payload has no {source[len('payload.') :]!r}", field=source)
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"{source} must be a string or a number to be a key", field=source)
    key = str(value)
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"{source} is longer than {MAX_KEY_LENGTH} characters", field=source)
    return key


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most `max_running` jobs running at once per key, across every worker and host."""

    name: str
    max_running: int
    key: KeySource = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.max_running < 1:
            raise ConfigurationError(f"limit {self.name!r}: max_running must be at least 1")
        check_source(self.key, f"limit {self.name!r}")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `limit` starts per `per_s` seconds per key (a token bucket of `burst` tokens,
    refilled at limit/per_s a second; `burst` defaults to `limit`), shared by every worker."""

    name: str
    limit: int
    per_s: float
    key: KeySource = ""
    burst: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.limit < 1 or self.per_s <= 0:
            raise ConfigurationError(f"rate {self.name!r}: limit ≥ 1 and per_s > 0 are needed")
        if self.burst is not None and self.burst < 1:
            raise ConfigurationError(f"rate {self.name!r}: burst must be at least 1")
        check_source(self.key, f"rate {self.name!r}")


Limit = Concurrency | Rate

# The built-in concurrency limit of a user's running quota: keyed by owner, its size per key
# that user's cap (users.max_running, else settings.quota_max_running; 0 or none: no cap).
RUNNING_QUOTA = "quota.running"
RESERVED_PREFIX = "quota."  # built-in limits' names: a job type's may not start with it

# While in these states a unique job blocks another with the same unique key (River's default).
DEFAULT_UNIQUE_STATES: frozenset[JobState] = frozenset(
    {JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING, JobState.RETRYING}
)


@dataclass(frozen=True, slots=True)
class Unique:
    """Jobs of one type with equal `fields` of the payload (all of it: `fields=None`) are one
    job while the existing one is in `states` and, with `period_s`, within one period."""

    fields: tuple[str, ...] | None = None
    period_s: float | None = None
    states: frozenset[JobState] = field(default=DEFAULT_UNIQUE_STATES)

    def __post_init__(self) -> None:
        if self.period_s is not None and self.period_s <= 0:
            raise ConfigurationError("unique: period_s must be positive")
        missing = DEFAULT_UNIQUE_STATES - self.states
        if missing:
            # A live job moving between live states must never meet its own key taken (the
            # index covers a row only while its state is in `states`), as River requires.
            names = ", ".join(sorted(s.value for s in missing))
            raise ConfigurationError(f"unique: states must include every live state ({names})")
        if self.fields is not None:
            if not self.fields or any(not name for name in self.fields):
                raise ConfigurationError("unique: fields must name payload fields (or be None)")
            if len(set(self.fields)) != len(self.fields):
                raise ConfigurationError("unique: a field appears twice")

    def key(self, *, owner_id: str, type_name: str, payload: dict[str, Any], now: datetime) -> str:
        """The job's unique key: sha256 hex of its owner, type, the chosen payload fields (a
        missing one counts as null) and, with a period, the period `now` falls in."""
        chosen = (
            payload if self.fields is None else {name: payload.get(name) for name in self.fields}
        )
        period = None if self.period_s is None else math.floor(now.timestamp() / self.period_s)
        text = json.dumps(
            [owner_id, type_name, chosen, period],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LimitKey:
    """One limit a stored job is under, with the key its submit evaluated."""

    name: str
    key: str


def check_names(limits: tuple[Limit, ...], what: str) -> None:
    """One declaration per name on a job type, none under the built-in quotas' prefix."""
    names = [limit.name for limit in limits]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{what}: a limit name appears twice")
    for name in names:
        if name.startswith(RESERVED_PREFIX):
            raise ConfigurationError(
                f"{what}: limit name {name!r} is reserved ({RESERVED_PREFIX}* names Conveyor's "
                f"own quotas, such as {RUNNING_QUOTA!r})"
            )


def check_submit_limits(limits: tuple[Limit, ...], declared: tuple[Limit, ...], what: str) -> None:
    """A type's submit limits, when it is declared: each name once across both kinds (a job
    has one key per limit), and no key source (the submit gives the key)."""
    check_names((*declared, *limits), what)
    for limit in limits:
        if limit.key != "":
            raise ConfigurationError(
                f"{what}: submit limit {limit.name!r} takes its key from the submit; "
                "declare it without key="
            )


def submit_limit_keys(
    allowed: tuple[Limit, ...], chosen: Mapping[str, Any] | None, type_name: str
) -> tuple[LimitKey, ...]:
    """The limits a submit applies (name -> key) among those its type allows, checked as a
    declared limit's key is (a string of at most MAX_KEY_LENGTH); InvalidInput otherwise."""
    if not chosen:
        return ()
    names = {limit.name for limit in allowed}
    if not names:
        raise InvalidInput(f"job type {type_name!r} allows no limits at submit", field="limits")
    keys = []
    for name, key in sorted(chosen.items()):
        if name not in names:
            raise InvalidInput(
                f"job type {type_name!r} does not allow limit {name!r} at submit "
                f"(it allows: {', '.join(sorted(names))})",
                field="limits",
            )
        if not isinstance(key, str):
            raise InvalidInput(f"the key of limit {name!r} must be a string", field="limits")
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidInput(
                f"the key of limit {name!r} is longer than {MAX_KEY_LENGTH} characters",
                field="limits",
            )
        keys.append(LimitKey(name, key))
    return tuple(keys)
