"""Which limited jobs a claim admits: the greedy plan over the slots and tokens it locked.

Pure: the drivers lock the candidate jobs, the free slots of their keys (FOR UPDATE SKIP
LOCKED on PostgreSQL; SQLite's one writer makes its reads race-free) and their rate
buckets in the claim's transaction, then ask `plan` which jobs go running, in claim order.
A job is admitted only if every limit it is under admits it; one that is not keeps what it
asked for free for the jobs after it (docs/flow-control.md, "Concurrency limits").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

# After a limited claim whose admission refused a candidate (its key had no room), the
# claims that probe each limited candidate's limits before one goes without again (the
# drivers' `_probing`; docs/flow-control.md "Head of line").
PROBE_AFTER_REFUSAL = 16


@dataclass(frozen=True, slots=True)
class Demand:
    """One limit a candidate is under, with its definition (kind None: not defined yet)."""

    job_id: str
    name: str
    key: str
    kind: str | None
    max_running: int | None = None
    rate_limit: int | None = None
    per_s: float | None = None
    burst: int | None = None

    @property
    def capacity(self) -> float:
        return float(self.burst or self.rate_limit or 0)

    @property
    def per_second(self) -> float:
        return (self.rate_limit or 0) / (self.per_s or 1.0)


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    refreshed_at: datetime


@dataclass
class Plan:
    """What to write: slots to hold, buckets to set, jobs to start; and what waits."""

    admitted: list[str] = field(default_factory=list)
    holds: list[tuple[str, str, int, str]] = field(default_factory=list)  # name, key, slot, job
    buckets: dict[tuple[str, str], float] = field(default_factory=dict)  # tokens left
    refused: dict[str, int] = field(default_factory=dict)  # refusals by limit name
    retry_in: float | None = None  # seconds until a refused rate has its next token


def refill(bucket: Bucket | None, demand: Demand, now: datetime) -> float:
    """The bucket's tokens at `now` (full when it does not exist yet)."""
    if bucket is None:
        return demand.capacity
    elapsed = max(0.0, (now - bucket.refreshed_at).total_seconds())
    return min(demand.capacity, bucket.tokens + elapsed * demand.per_second)


def plan(
    order: Sequence[str],
    demands: Iterable[Demand],
    free: Mapping[tuple[str, str], Sequence[int]],
    buckets: Mapping[tuple[str, str], Bucket],
    now: datetime,
) -> Plan:
    """Admit the jobs of `order` (claim order) greedily: each takes a free slot of every
    concurrency limit and a token of every rate it is under, or nothing at all."""
    by_job: dict[str, list[Demand]] = {}
    for demand in demands:
        by_job.setdefault(demand.job_id, []).append(demand)
    slots = {pair: sorted(numbers) for pair, numbers in free.items()}
    tokens: dict[tuple[str, str], float] = {}
    out = Plan()
    for job_id in order:
        mine = by_job.get(job_id)
        if not mine:
            continue  # locked by another claim meanwhile, or not queued any more
        blocked = _blocker(mine, slots, tokens, buckets, now, out)
        if blocked is not None:
            out.refused[blocked.name] = out.refused.get(blocked.name, 0) + 1
            continue
        for demand in mine:
            pair = (demand.name, demand.key)
            if demand.kind == "concurrency" and demand.max_running is not None:
                out.holds.append((demand.name, demand.key, slots[pair].pop(0), job_id))
            elif demand.kind == "rate":
                tokens[pair] -= 1.0
                out.buckets[pair] = tokens[pair]
        out.admitted.append(job_id)
    return out


def _blocker(
    mine: Sequence[Demand],
    slots: Mapping[tuple[str, str], Sequence[int]],
    tokens: dict[tuple[str, str], float],
    buckets: Mapping[tuple[str, str], Bucket],
    now: datetime,
    out: Plan,
) -> Demand | None:
    """The first of a job's limits that cannot admit it now (None: all can); a rate's
    refusal notes when its next token comes."""
    for demand in mine:
        pair = (demand.name, demand.key)
        if demand.kind == "concurrency" and (demand.max_running is None or slots.get(pair)):
            continue  # a free slot, or a running quota without a cap
        if demand.kind == "rate":
            if pair not in tokens:
                tokens[pair] = refill(buckets.get(pair), demand, now)
            if tokens[pair] >= 1.0:
                continue
            if demand.per_second:
                wait = (1.0 - tokens[pair]) / demand.per_second
                out.retry_in = wait if out.retry_in is None else min(out.retry_in, wait)
        return demand
    return None


def wanted(demands: Iterable[Demand]) -> dict[tuple[str, str], tuple[int, int]]:
    """Per concurrency (limit, key): its max_running and how many candidates want a slot."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for d in demands:
        if d.kind == "concurrency" and d.max_running:
            _, need = out.get((d.name, d.key), (d.max_running, 0))
            out[(d.name, d.key)] = (d.max_running, need + 1)
    return dict(sorted(out.items()))


def rated(demands: Iterable[Demand]) -> dict[tuple[str, str], Demand]:
    """Per rate (limit, key): one of its demands (they share the definition)."""
    return dict(sorted({(d.name, d.key): d for d in demands if d.kind == "rate"}.items()))
