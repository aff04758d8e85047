"""The webhook delivery log: the webhooks sink's own outbox.

`fan_out` turns relayed events into one row per (event, target) in one transaction, unique on
that pair, so a batch the relay delivers again adds nothing. `claim` hands due rows to one
dispatcher at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's single writer under
`BEGIN IMMEDIATE`) and pushes their next attempt time forward by a lease, so a dispatcher that
dies mid-send leaves them due again later. A claimed delivery carries its signing secret,
derived from its subscription's (or callback secret's) nonce by `store/webhooks.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.webhooks import (
    CALLBACK_TARGET,
    CALLBACK_TYPES,
    DeliveryRecord,
    DeliveryState,
    DueDelivery,
    Settled,
    WebhookRecord,
    endpoint_of,
)
from conveyor.errors import Conflict, NotFound
from conveyor.store.database import Database
from conveyor.store.tables import webhook_deliveries
from conveyor.store.webhooks import (
    SecretDeriver,
    active_subscriptions,
    job_callback_urls,
    signing_secrets,
)

_D = webhook_deliveries


class WebhookDeliveryStore:
    """Fan-out, the dispatcher's claim/settle/release, manual retry, log pages and pruning."""

    def __init__(self, db: Database, keys: SecretDeriver) -> None:
        self.db = db
        self.keys = keys

    # ---- fan-out (the sink's deliver) ---------------------------------------------------------
    async def fan_out(self, events: Sequence[ev.Event], encode: Callable[[ev.Event], bytes]) -> int:
        """One pending delivery per (event, matching subscription or callback), in one
        transaction; rows that exist already (a redelivered batch) are left alone."""
        if not events:
            return 0
        async with self.db.write() as conn:
            hooks = await active_subscriptions(conn, {e.owner_id for e in events})
            callbacks = await job_callback_urls(
                conn, {e.job_id for e in events if e.type in CALLBACK_TYPES}
            )
            rows = _delivery_rows(events, hooks, callbacks, encode, utcnow())
            if rows:
                stmt = self.db.insert(_D).on_conflict_do_nothing(
                    index_elements=[_D.c.event_id, _D.c.target]
                )
                await conn.execute(stmt, rows)
        return len(rows)

    # ---- the dispatcher's side ------------------------------------------------------------
    async def claim(
        self, limit: int, lease_until: datetime, busy: Sequence[str], per_endpoint: int
    ) -> list[DueDelivery]:
        """Up to `limit` due deliveries, at most `per_endpoint` per endpoint and none of the
        `busy` endpoints; each one's attempt is counted and its next try moved to the lease."""
        if limit <= 0:
            return []
        now = utcnow()
        due = [_D.c.state == "pending", _D.c.next_attempt_at <= now]
        if busy:
            due.append(_D.c.endpoint.notin_(list(busy)))
        async with self.db.read() as conn:  # idle polls stay reads: no write lock, no commit
            if await conn.scalar(select(_D.c.id).where(*due).limit(1)) is None:
                return []
        candidates = (
            select(_D.c.id, _D.c.endpoint, _D.c.next_attempt_at)
            .where(*due)
            .order_by(_D.c.next_attempt_at, _D.c.id)
            .limit(min(limit * per_endpoint, 10 * limit))
            .with_for_update(skip_locked=True)
            .cte("candidates")
        )
        rank = func.row_number().over(
            partition_by=candidates.c.endpoint,
            order_by=(candidates.c.next_attempt_at, candidates.c.id),
        )
        ranked = select(candidates.c.id, rank.label("rank")).cte("ranked")
        chosen = select(ranked.c.id).where(ranked.c.rank <= per_endpoint).limit(limit)
        stmt = (
            update(_D)
            .where(_D.c.id.in_(chosen.scalar_subquery()), _D.c.state == "pending")
            .values(attempts=_D.c.attempts + 1, next_attempt_at=lease_until, updated_at=now)
            .returning(*_DUE_COLUMNS)
        )
        async with self.db.write() as conn:
            rows = (await conn.execute(stmt)).all()
            secrets = await signing_secrets(conn, rows, self.keys)
        return [_due(row, secret) for row, secret in zip(rows, secrets, strict=True)]

    async def settle(self, outcomes: Sequence[Settled]) -> None:
        """Record how attempts ended, in one transaction; an attempt that is no longer the
        row's latest (its lease ran out and another dispatcher took it) changes nothing."""
        if not outcomes:
            return
        now = utcnow()
        stmt = (
            update(_D)
            .where(
                _D.c.id == bindparam("b_id"),
                _D.c.attempts == bindparam("b_attempt"),
                _D.c.state == "pending",
            )
            .values(
                state=bindparam("b_state"),
                last_status=bindparam("b_status"),
                last_error=bindparam("b_error"),
                next_attempt_at=bindparam("b_next"),
                finished_at=bindparam("b_finished"),
                updated_at=now,
            )
        )
        params = [
            {
                "b_id": o.id, "b_attempt": o.attempt, "b_state": o.state, "b_status": o.status,
                "b_error": o.error, "b_next": o.retry_at if o.state == "pending" else None,
                "b_finished": None if o.state == "pending" else now,
            }
            for o in outcomes
        ]  # fmt: skip
        async with self.db.write() as conn:
            await conn.execute(stmt, params)

    async def release(self, claimed: Sequence[DueDelivery]) -> None:
        """Hand back claims that were never attempted (a stop): due now, attempt uncounted."""
        if not claimed:
            return
        stmt = (
            update(_D)
            .where(
                _D.c.id == bindparam("b_id"),
                _D.c.attempts == bindparam("b_attempt"),
                _D.c.state == "pending",
            )
            .values(attempts=_D.c.attempts - 1, next_attempt_at=utcnow())
        )
        async with self.db.write() as conn:
            await conn.execute(stmt, [{"b_id": d.id, "b_attempt": d.attempt} for d in claimed])

    async def retry(self, delivery_id: int, owner_id: str | None) -> DeliveryRecord:
        """A failed delivery pending again, due now, with its attempts reset: a new round of
        up to `max_attempts`. Its last status and error stay until the next attempt."""
        now = utcnow()
        owned = [_D.c.id == delivery_id, *_owned(owner_id)]
        stmt = (
            update(_D)
            .where(*owned, _D.c.state == "failed")
            .values(state="pending", attempts=0, next_attempt_at=now, finished_at=None)
            .values(updated_at=now)
            .returning(*_LOG_COLUMNS)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(stmt)).one_or_none()
            state = None if row else await conn.scalar(select(_D.c.state).where(*owned))
        if row is not None:
            return _delivery(row)
        if state is None:
            raise NotFound("no such delivery", delivery_id=delivery_id)
        raise Conflict(f"only a failed delivery can be retried; this one is {state}", state=state)

    # ---- the log -----------------------------------------------------------------------------
    async def deliveries(
        self,
        *,
        webhook_id: str | None = None,
        job_id: str | None = None,
        state: DeliveryState | None = None,
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[DeliveryRecord]:
        """Newest first, cursor-paginated by id."""
        clauses = []
        if webhook_id is not None:
            clauses.append(_D.c.webhook_id == webhook_id)
        if job_id is not None:
            clauses.append(_D.c.job_id == job_id)
        if state is not None:
            clauses.append(_D.c.state == state)
        if after_id is not None:
            clauses.append(_D.c.id < after_id)
        query = select(*_LOG_COLUMNS).where(*clauses).order_by(_D.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return [_delivery(row) for row in await conn.execute(query)]

    async def prune(self, before: datetime, batch: int = 10_000) -> int:
        """Delete finished deliveries older than `before`, one bounded batch per statement."""
        total = 0
        while True:
            victims = (
                select(_D.c.id)
                .where(_D.c.state != "pending", _D.c.finished_at < before)
                .limit(batch)
            )
            async with self.db.write() as conn:
                done = await conn.execute(delete(_D).where(_D.c.id.in_(victims.scalar_subquery())))
            total += done.rowcount
            if done.rowcount < batch:
                return total


_DUE_COLUMNS = (
    _D.c.id, _D.c.event_id, _D.c.event_type, _D.c.job_id, _D.c.target, _D.c.webhook_id,
    _D.c.owner_id, _D.c.url, _D.c.endpoint, _D.c.body, _D.c.attempts,
)  # fmt: skip
_LOG_COLUMNS = [column for column in _D.c if column.name not in ("body", "endpoint")]


def _owned(owner_id: str | None) -> list[Any]:
    return [] if owner_id is None else [_D.c.owner_id == owner_id]


def _delivery_rows(
    events: Sequence[ev.Event],
    hooks: dict[str, list[WebhookRecord]],
    callbacks: dict[str, str],
    encode: Callable[[ev.Event], bytes],
    now: datetime,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for event in events:
        targets: list[tuple[str, str | None, str]] = [
            (h.id, h.id, h.url) for h in hooks.get(event.owner_id, ()) if h.wants(event)
        ]
        if event.type in CALLBACK_TYPES and event.job_id in callbacks:
            targets.append((CALLBACK_TARGET, None, callbacks[event.job_id]))
        if not targets:
            continue
        body = encode(event).decode()
        for target, webhook_id, url in targets:
            rows.append({
                "event_id": event.id, "target": target, "webhook_id": webhook_id,
                "job_id": event.job_id, "owner_id": event.owner_id, "event_type": event.type,
                "url": url, "endpoint": endpoint_of(url), "body": body, "state": "pending",
                "attempts": 0, "next_attempt_at": now, "last_status": None, "last_error": None,
                "created_at": now, "updated_at": now, "finished_at": None,
            })  # fmt: skip
    return rows


def _due(row: Any, secret: str | None) -> DueDelivery:
    return DueDelivery(
        id=row.id, event_id=row.event_id, event_type=row.event_type, job_id=row.job_id,
        target=row.target, url=row.url, endpoint=row.endpoint, body=row.body.encode(),
        attempt=row.attempts, secret=secret,
    )  # fmt: skip


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id, event_id=row.event_id, event_type=row.event_type, target=row.target,
        webhook_id=row.webhook_id, job_id=row.job_id, owner_id=row.owner_id, url=row.url,
        state=row.state, attempts=row.attempts, next_attempt_at=row.next_attempt_at,
        last_status=row.last_status, last_error=row.last_error, created_at=row.created_at,
        updated_at=row.updated_at, finished_at=row.finished_at,
    )  # fmt: skip
