"""Flow control's own rows: limit definitions, the reconcile of slots, a rate's next token.

The claim's admission is the drivers' (store/admission.py plans it); the release of a job's
slots is the database's, by trigger, in the transaction of every state change out of
running (migration 0012). What is left here runs rarely: at start, and on the leader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, select, update

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA, Concurrency, Limit
from conveyor.domain.states import JobState
from conveyor.store.base import StoreBase
from conveyor.store.tables import flow_limits, jobs, limit_slots, rate_buckets, users

RECENT_S = 0.5  # a token due this recently may have been missed by the last claim
MIN_WAIT_S = 0.05  # the shortest wait for a token: never a tight loop


@dataclass(frozen=True, slots=True)
class Drift:
    """A slot the reconcile freed: held by `job_id`, which is not running (or is gone)."""

    name: str
    key: str
    slot: int
    job_id: str


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
