"""Quotas at submit, and flow control made visible: limits per key, and why a job waits.

docs/flow-control.md ("Quotas", "Seeing limits"). The queued quota is checked in the
transaction that inserts (services/intake.py); what the limits hold is read from the jobs
table (job_limits joined with jobs), never from the slots the claim keeps.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor.domain.flow_view import Bucket, KeyCount, LimitDefinition
from conveyor.domain.jobs import JobRecord
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput, QuotaExceeded
from conveyor.store.backend import QueueBackend
from conveyor.store.transaction import Transaction

MAX_LIMITS_PAGE = 500


@dataclass(frozen=True, slots=True)
class QuotaAsk:
    """One request's jobs for one owner: `own_cap` is the user's max_queued (None: default)."""

    owner_id: str
    own_cap: int | None
    jobs: int


@dataclass(frozen=True, slots=True)
class KeyView:
    """One limit's key now: running and ready jobs, and a rate limit's tokens."""

    name: str
    kind: str | None  # None: the limit is not (yet) in flow_limits
    key: str
    running: int
    ready: int
    max_running: int | None
    tokens: float | None  # rate limits: the bucket refilled to now (None: no bucket yet)
    capacity: int | None  # rate limits: the bucket's size (burst)


@dataclass(frozen=True, slots=True)
class LimitsPage:
    limits: list[LimitDefinition]
    keys: list[KeyView]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class WaitingReason:
    """Why a queued job is not running yet: `kind` is "limit", "rate", "quota" or "turn"."""

    kind: str
    message: str
    limit: str | None = None
    key: str | None = None


# (owner -> cap) -> each owner's waiting jobs, counted up to its cap, in the inserting transaction
WaitingCounts = Callable[[Mapping[str, int]], Awaitable[dict[str, int]]]


async def quota_verdicts(
    asks: Sequence[QuotaAsk], default_cap: int, waiting_counts: WaitingCounts
) -> list[QuotaExceeded | None]:
    """Each ask's verdict, in order: the jobs it adds to its owner's waiting jobs (and to
    those of the asks before it that pass) must stay within the owner's cap (its own, else
    `default_cap`; 0: none). Owners without a cap cost no statement. The REST doors' intake
    and the library's enqueue (counting on the caller's connection) judge alike."""
    caps = {a.owner_id: default_cap if a.own_cap is None else a.own_cap for a in asks}
    capped = {owner: cap for owner, cap in caps.items() if cap > 0}
    waiting = await waiting_counts(capped) if capped else {}
    verdicts: list[QuotaExceeded | None] = []
    for ask in asks:
        cap = caps[ask.owner_id]
        if cap == 0:
            verdicts.append(None)
            continue
        now = waiting[ask.owner_id]
        if now + ask.jobs > cap:
            verdicts.append(_over(cap, now, ask.jobs))
        else:
            waiting[ask.owner_id] = now + ask.jobs
            verdicts.append(None)
    return verdicts


class FlowService:
    # CONVEYOR_QUOTA_MAX_QUEUED / _RUNNING (set by the engine): a user's quota when their own
    # is unset; 0: no cap.
    quota_max_queued: int = 0
    quota_max_running: int = 0

    def __init__(self, backend: QueueBackend) -> None:
        self.backend = backend

    async def check_quotas(
        self, tx: Transaction, asks: Sequence[QuotaAsk]
    ) -> list[QuotaExceeded | None]:
        """Each ask's verdict, in order, in `tx` (the transaction that will insert them):
        `quota_verdicts`, counted in `tx`."""
        return await quota_verdicts(
            asks, self.quota_max_queued, functools.partial(self.backend.waiting_counts, tx)
        )

    async def limits(
        self, owner_id: str | None, *, cursor: str | None = None, limit: int = 100
    ) -> LimitsPage:
        """Every limit's keys with jobs running or ready, a page at a time (by name, key);
        `owner_id` shows only keys of that owner's jobs, counting only them (None: all)."""
        if not 1 <= limit <= MAX_LIMITS_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMITS_PAGE}", field="limit")
        after = _decode(cursor) if cursor else None
        counts = await self.backend.key_counts(owner_id=owner_id, after=after, limit=limit)
        definitions = await self.backend.limit_definitions()
        keys = await self._views(counts, {d.name: d for d in definitions})
        more = len(counts) == limit
        return LimitsPage(definitions, keys, _encode(counts[-1]) if more and counts else None)

    async def _views(
        self, counts: Sequence[KeyCount], by_name: dict[str, LimitDefinition]
    ) -> list[KeyView]:
        rated = [(c.name, c.key) for c in counts if _kind(by_name, c.name) == "rate"]
        buckets = {(b.name, b.key): b for b in await self.backend.buckets(rated)}
        now = datetime.now(UTC)
        views = []
        for c in counts:
            d = by_name.get(c.name)
            bucket = buckets.get((c.name, c.key))
            tokens = refilled(d, bucket, now) if d is not None and d.kind == "rate" else None
            views.append(
                KeyView(
                    c.name, d.kind if d else None, c.key, c.running, c.ready,
                    d.max_running if d else None, tokens,
                    (d.burst or d.rate_limit) if d and d.kind == "rate" else None,
                )
            )  # fmt: skip
        return views

    async def limit_keys(self, job_id: str) -> dict[str, str]:
        """Every limit a job is under, with the key its submit stored: name -> key."""
        return dict(await self.backend.job_limit_keys(job_id))

    async def waiting_reason(self, job: JobRecord) -> WaitingReason | None:
        """Why a queued job waits (None for a job that is not queued): the first of a
        concurrency limit at its cap, a rate limit out of tokens, its owner's running quota,
        else its turn (claim order, fair dispatch)."""
        if job.state != JobState.QUEUED:
            return None
        pairs = await self.backend.job_limit_keys(job.id)
        if pairs:
            reason = await self._limit_reason(pairs)
            if reason is not None:
                return reason
        reason = await self._quota_reason(job.owner_id)
        if reason is not None:
            return reason
        return WaitingReason("turn", "queued: waiting for a free worker and its turn")

    async def _limit_reason(self, pairs: Sequence[tuple[str, str]]) -> WaitingReason | None:
        by_name = {d.name: d for d in await self.backend.limit_definitions()}
        counts = {(c.name, c.key): c for c in await self.backend.key_counts(only=pairs)}
        for name, key in pairs:
            d = by_name.get(name)
            count = counts.get((name, key))
            running = count.running if count else 0
            cap = d.max_running if d is not None and d.kind == "concurrency" else None
            if cap is not None and running >= cap:
                return WaitingReason(
                    "limit",
                    f"limit {name!r} is at its cap for key {key!r}: {running} of {cap} running",
                    name,
                    key,
                )
        now = datetime.now(UTC)
        rated = [(n, k) for n, k in pairs if _kind(by_name, n) == "rate"]
        for bucket in await self.backend.buckets(rated):
            tokens = refilled(by_name[bucket.name], bucket, now)
            if tokens is not None and tokens < 1:
                return WaitingReason(
                    "rate",
                    f"rate limit {bucket.name!r} is out of tokens for key {bucket.key!r}",
                    bucket.name,
                    bucket.key,
                )
        return None

    async def _quota_reason(self, owner_id: str) -> WaitingReason | None:
        own = await self.backend.owner_quota(owner_id)
        cap = self.quota_max_running if own is None else own
        if cap <= 0:
            return None
        running = await self.backend.running_count(owner_id, cap)
        if running < cap:
            return None
        return WaitingReason(
            "quota", f"its owner's running quota is reached: {running} of {cap} running"
        )

    async def limit_totals(self) -> list[KeyCount]:
        """Per limit name: jobs running and ready (the metrics' gauges)."""
        return await self.backend.limit_totals()


def refilled(limit: LimitDefinition, bucket: Bucket | None, now: datetime) -> float | None:
    """A rate bucket's tokens at `now`: stored tokens plus the refill since, at most its size;
    None without a bucket or a definition to refill by (a full bucket is made at first use)."""
    if bucket is None or limit.rate_limit is None or not limit.per_s:
        return None
    size = float(limit.burst or limit.rate_limit)
    elapsed = max(0.0, (now - bucket.refreshed_at).total_seconds())
    return min(size, bucket.tokens + elapsed * limit.rate_limit / limit.per_s)


def _kind(by_name: dict[str, LimitDefinition], name: str) -> str | None:
    d = by_name.get(name)
    return d.kind if d else None


def _over(cap: int, waiting: int, adding: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"quota exceeded: at most {cap} jobs may wait (scheduled, queued or retrying) per "
        f"user; you have {'at least ' if waiting >= cap else ''}{waiting} waiting and this "
        f"request adds {adding}; nothing was stored",
        max_queued=cap,
        waiting=waiting,
        requested=adding,
    )


def _encode(count: KeyCount) -> str:
    """A position in (name, key) order: `name/key` (a limit's name never holds a "/")."""
    return f"{count.name}/{count.key}"


def _decode(cursor: str) -> tuple[str, str]:
    """Any string is a position: what a name cannot hold splits it, else all of it is a name."""
    name, _, key = cursor.partition("/")
    return name, key
