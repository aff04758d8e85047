"""Flow control's own rows: limit definitions, the reconcile of slots, a rate's next token.

The claim's admission is the drivers' (store/admission.py plans it); the release of a job's
slots is the database's, by trigger, in the transaction of every state change out of
running (migration 0012). What is left here runs rarely: at start, and on the leader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, select, update

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA, Concurrency, Limit
from conveyor.domain.states import JobState
from conveyor.store.base import StoreBase
from conveyor.store.tables import flow_limits, job_limits, jobs, limit_slots, rate_buckets, users

RECENT_S = 0.5  # a token due this recently may have been missed by the last claim
MIN_WAIT_S = 0.05  # the shortest wait for a token: never a tight loop


@dataclass(frozen=True, slots=True)
class Drift:
    """A slot the reconcile freed: held by `job_id`, which is not running (or is gone)."""

    name: str
    key: str
    slot: int
    job_id: str


@dataclass(frozen=True, slots=True)
class Unheld:
    """A running job under a concurrency limit that held no slot of it (a leak the other
    way: its key may run more than the limit). `slot`: the free slot the reconcile gave it;
    None: every slot 1..max_running was held, so the key runs over its limit until one of
    its jobs stops (logged, and looked at again at the next reconcile)."""

    name: str
    key: str
    job_id: str
    max_running: int
    slot: int | None


MAX_SLOT_TRIES = 3  # a free slot a claim takes meanwhile: try the next one, a few times


class Limits(StoreBase):
    async def define_limits(self, limits: Iterable[Limit]) -> None:
        """Store the values of these limits (a worker's and the API's registry, at start).
        The last process to start with a changed value sets it for every process (last
        writer wins); a claim reads the stored value, never its own code's."""
        now = utcnow()
        rows: dict[str, dict[str, Any]] = {}
        for limit in limits:
            if isinstance(limit, Concurrency):
                rows[limit.name] = {
                    "name": limit.name, "kind": "concurrency", "max_running": limit.max_running,
                    "rate_limit": None, "per_s": None, "burst": None, "updated_at": now,
                }  # fmt: skip
            else:
                rows[limit.name] = {
                    "name": limit.name, "kind": "rate", "max_running": None,
                    "rate_limit": limit.limit, "per_s": limit.per_s, "burst": limit.burst,
                    "updated_at": now,
                }  # fmt: skip
        if not rows:
            return
        async with self.db.write() as conn:
            for row in sorted(rows.values(), key=lambda r: r["name"]):
                stmt = self.driver.insert(flow_limits).values(**row)
                changed = {k: v for k, v in row.items() if k != "name"}
                await conn.execute(
                    stmt.on_conflict_do_update(index_elements=[flow_limits.c.name], set_=changed)
                )

    async def define_running_quota(self, default: int) -> None:
        """The running quota's default cap per user (0: none; a user's own cap, users.
        max_running, overrides it); last writer wins, as for `define_limits`."""
        row = {
            "kind": "concurrency", "max_running": default or None, "rate_limit": None,
            "per_s": None, "burst": None, "updated_at": utcnow(),
        }  # fmt: skip
        stmt = self.driver.insert(flow_limits).values(name=RUNNING_QUOTA, **row)
        async with self.db.write() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=[flow_limits.c.name], set_=row)
            )

    async def running_caps(self) -> dict[str, int]:
        """Every user's own running cap (users.max_running > 0), by user id."""
        query = select(users.c.id, users.c.max_running).where(users.c.max_running > 0)
        async with self.db.read() as conn:
            return {row.id: row.max_running for row in (await conn.execute(query)).all()}

    async def reconcile_limits(self) -> list[Drift]:
        """Free every slot held by a job that is not running (or no longer exists): what a
        release missed (none should). Read first, then each freed only if still held by the
        job read, so a slot taken meanwhile by a new claim is never freed."""
        running = exists(
            select(1).where(
                jobs.c.id == limit_slots.c.job_id, jobs.c.state == JobState.RUNNING.value
            )
        )
        held = select(
            limit_slots.c.name, limit_slots.c.key, limit_slots.c.slot, limit_slots.c.job_id
        ).where(limit_slots.c.job_id.isnot(None), ~running)
        async with self.db.read() as conn:
            suspects = [Drift(*row) for row in (await conn.execute(held)).all()]
        fixed: list[Drift] = []
        for drift in suspects:
            async with self.db.write() as conn:
                result = await conn.execute(
                    update(limit_slots)
                    .where(
                        and_(
                            limit_slots.c.name == drift.name,
                            limit_slots.c.key == drift.key,
                            limit_slots.c.slot == drift.slot,
                            limit_slots.c.job_id == drift.job_id,
                        ),
                        ~running,
                    )
                    .values(job_id=None)
                )
                if result.rowcount:
                    fixed.append(drift)
        return fixed

    async def reconcile_unheld(self) -> list[Unheld]:
        """Give each running job that holds no slot of one of its concurrency limits a free
        slot of its key (none should lack one: the claim takes every slot with the start).
        Read first; then, per job and limit, in a write transaction of its own: the job's
        row locked (a finish waits, or has already happened: then it is skipped), the key's
        missing slots 1..max_running made, and the lowest free one taken, only if still
        free (`job_id IS NULL` re-checked, as the claim's own take)."""
        async with self.db.read() as conn:
            suspects = [
                (row.job_id, row.name, row.key, int(row.cap))
                for row in (await conn.execute(_unheld_query())).all()
                if row.cap is not None and row.cap > 0
            ]
        found: list[Unheld] = []
        for job_id, name, key, cap in suspects:
            async with self.db.write() as conn:
                lock = (
                    select(jobs.c.id)
                    .where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
                    .with_for_update()
                )
                if (await conn.execute(lock)).first() is None:
                    continue  # it stopped meanwhile: nothing to hold
                pair = and_(limit_slots.c.name == name, limit_slots.c.key == key)
                mine = select(limit_slots.c.slot).where(pair, limit_slots.c.job_id == job_id)
                if (await conn.execute(mine)).first() is not None:
                    continue  # a slot is its after all
                made = self.driver.insert(limit_slots).values(
                    [
                        {"name": name, "key": key, "slot": n, "job_id": None}
                        for n in range(1, cap + 1)
                    ]
                )
                await conn.execute(made.on_conflict_do_nothing())
                slot = await _take_free(conn, name, key, cap, job_id)
            found.append(Unheld(name, key, job_id, cap, slot))
        return found

    async def next_token_in(self, names: Sequence[str]) -> float | None:
        """Seconds until the first of these rates' drained buckets has a token again (None:
        none is drained): when a worker whose types are under them should claim again."""
        if not names:
            return None
        query = (
            select(
                rate_buckets.c.tokens,
                rate_buckets.c.refreshed_at,
                flow_limits.c.rate_limit,
                flow_limits.c.per_s,
            )
            .join(flow_limits, flow_limits.c.name == rate_buckets.c.name)
            .where(rate_buckets.c.name.in_(list(names)), rate_buckets.c.tokens < 1)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        now = utcnow()
        soonest: float | None = None
        for tokens, refreshed_at, rate_limit, per_s in rows:
            if not rate_limit or not per_s:
                continue
            at = (1.0 - tokens) * per_s / rate_limit - (now - refreshed_at).total_seconds()
            # A token that came due in the last moments may have come after the claim that
            # missed it: claim again soon. One due long ago is a bucket nobody waits on.
            if at > -RECENT_S and (soonest is None or at < soonest):
                soonest = max(at, MIN_WAIT_S)
        return soonest


def _unheld_query() -> Any:
    """Each (running job, concurrency limit) the job holds no slot of, with the limit's size
    for its key (the running quota's: the user's own cap, else the default; NULL: none)."""
    own_cap = (
        select(users.c.max_running)
        .where(
            job_limits.c.name == RUNNING_QUOTA,
            users.c.id == job_limits.c.key,
            users.c.max_running > 0,
        )
        .scalar_subquery()
    )
    held = exists(
        select(1).where(
            limit_slots.c.name == job_limits.c.name,
            limit_slots.c.key == job_limits.c.key,
            limit_slots.c.job_id == job_limits.c.job_id,
        )
    )
    return (
        select(
            job_limits.c.job_id,
            job_limits.c.name,
            job_limits.c.key,
            func.coalesce(own_cap, flow_limits.c.max_running).label("cap"),
        )
        .join(jobs, jobs.c.id == job_limits.c.job_id)
        .join(flow_limits, flow_limits.c.name == job_limits.c.name)
        .where(
            jobs.c.state == JobState.RUNNING.value,
            jobs.c.limited.is_(True),
            flow_limits.c.kind == "concurrency",
            ~held,
        )
        .order_by(job_limits.c.job_id, job_limits.c.name)
    )


async def _take_free(conn: Any, name: str, key: str, cap: int, job_id: str) -> int | None:
    """The lowest free slot 1..cap of (name, key), taken by `job_id`; None if none is free.
    The UPDATE re-checks that the slot is still free (a claim may take it meanwhile: then
    the next free one is tried)."""
    pair = and_(limit_slots.c.name == name, limit_slots.c.key == key)
    for _ in range(MAX_SLOT_TRIES):
        lowest = select(func.min(limit_slots.c.slot)).where(
            pair, limit_slots.c.slot <= cap, limit_slots.c.job_id.is_(None)
        )
        slot = (await conn.execute(lowest)).scalar()
        if slot is None:
            return None
        taken = await conn.execute(
            update(limit_slots)
            .where(pair, limit_slots.c.slot == slot, limit_slots.c.job_id.is_(None))
            .values(job_id=job_id)
        )
        if taken.rowcount:
            return int(slot)
    return None
