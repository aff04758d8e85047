"""PostgreSQL's statements: SKIP LOCKED claims, array batches, events in the same statement.

The hot path (enqueue, claim, finish) runs its named statements (store/sql/postgres.sql)
on the asyncpg connection of a pooled SQLAlchemy connection (`Database.raw`): one prepared
statement per operation whatever the batch size, without SQLAlchemy's per-statement cost,
and one pool for everything. LISTEN and leadership hold sessions of their own
(drivers/pg_sessions.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic_core import PydanticSerializationError, to_json
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Table,
    Text,
    cast,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.jobs import ClaimedJob
from conveyor.domain.states import JobState
from conveyor.store import admission
from conveyor.store import events as outbox
from conveyor.store.database import Database, plain_postgres_dsn, search_path
from conveyor.store.driver import (
    Callback,
    Claimed,
    Existing,
    Fence,
    FinishBatch,
    Inserted,
    Leadership,
    Listener,
    Said,
    StoredWorkflow,
    WorkflowInsert,
)
from conveyor.store.drivers.pg_sessions import (
    CANCEL_CHANNEL,
    EVENTS_CHANNEL,
    JOBS_CHANNEL,
    AdvisoryLeadership,
    Notifier,
    PgListener,
)
from conveyor.store.events import requeued_queues, rescued_events
from conveyor.store.locking import locked_in_id_order
from conveyor.store.sql import load
from conveyor.store.tables import jobs, workers

SQL = load(
    "postgres",
    frozenset(
        {
            "enqueue",
            "enqueue_one",
            "enqueue_fresh",
            "enqueue_fresh_limited",
            "existing",
            "existing_unique",
            "record_callbacks",
            "claim",
            "claim_queue",
            "claim_one",
            "claim_one_unprobed",
            "claim_any",
            "claim_admit",
            "claim_one_admit",
            "claim_begin_generic",
            "claim_plan_default",
        }
        | {"lock_mine", "complete", "retry", "fail", "rescue", "notify", "try_lead", "unlead"}
        | {"ping", "lead_ping", "horizon", "lock_events", "backend_pid", "progress"}
        | {"record_limits", "limit_start", "limit_demands", "limit_slots_free"}
        | {"rate_buckets_lock", "limit_slots_analyze"}
        | {"limit_admit", "rekey_events", "schema_enter", "schema_leave"}
        | {"caller_savepoint", "caller_savepoint_undo", "caller_savepoint_done"}
        | {"workflow_insert", "workflow_keyed", "workflow_steps", "workflow_edges"}
    ),
)
log = logging.getLogger("conveyor.store")
# A hung statement on the hot path surfaces as an error rather than a stuck worker.
COMMAND_TIMEOUT = 60.0
# The claims that admit their limited candidates in the same statement (`_admitted`).
ADMITTING = ("claim_admit", "claim_one_admit")
# After a limited claim `limit_start` could not serve, the claims that go to the general
# admission before it is tried again.
FALLBACK_EVERY = 16
# Slots made by this process's claims since its last ANALYZE of limit_slots after which it
# runs one: ANALYZE_AFTER, plus ANALYZE_GROWTH of the slots it had made before (the rule
# autovacuum follows, without its minute of delay).
ANALYZE_AFTER = 50
ANALYZE_GROWTH = 0.2


class PostgresDriver:
    dialect = "postgresql"

    def __init__(self, db: Database) -> None:
        self.db = db
        # asyncpg takes a DSN's unknown parameters as session settings: the dedicated
        # sessions (LISTEN, leadership) use the pool's schema too.
        self.dsn = plain_postgres_dsn(db.url, search_path(db.schema))
        self._notifier = Notifier(self._notify_events)
        self._not_at_once = 0  # limited claims left before `limit_start` is tried again
        self._limited_last = False  # the last claim had limited candidates
        self._probing = 0  # limited claims left that probe their candidates' limits
        self._slots_made = 0  # by this process's claims since its last ANALYZE of them
        self._slots_analyzed = 0  # by them before it
        # The next claim's transaction, opened while its worker was idle (`arm_claim`).
        # Its third item: it runs the claim's generic plan (`claim_begin_generic`).
        self._armed: tuple[contextlib.AsyncExitStack, Any, bool] | None = None
        self._one_queue_last = False  # this driver's last claim was of one queue

    # ---- pieces of the shared Core statements -------------------------------------------
    def insert(self, table: Table) -> Any:
        return pg_insert(table)

    def xid(self) -> ColumnElement[Any]:
        # After `lock_events`: at least this transaction's id, and at least the xmax of a
        # snapshot taken after the lock, so no reader that missed the lock has passed it
        # (docs/events.md, "Reading in commit order").
        xmax = cast(cast(func.pg_snapshot_xmax(func.pg_current_snapshot()), Text), BigInteger)
        return func.greatest(func.txid_current(), xmax)

    async def lock_events(self, conn: AsyncConnection) -> None:
        await conn.exec_driver_sql(SQL["lock_events"])

    async def horizon(self) -> int | None:
        async with self.db.raw() as raw:
            return int(await raw.fetchval(SQL["horizon"], timeout=COMMAND_TIMEOUT))

    def has_tag(self, tag: str) -> ColumnElement[bool]:
        wanted = cast(literal(json.dumps([tag])), JSONB)
        return jobs.c.tags.op("@>", return_type=Boolean)(wanted)

    def minute(self, column: Any) -> ColumnElement[Any]:
        return func.date_trunc("minute", column)

    def json_object_agg(self, key: Any, value: Any) -> ColumnElement[Any]:
        return func.json_object_agg(key, value, type_=JSON)

    def in_lock_order(self, pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
        return locked_in_id_order(pick)

    # ---- the hot path ---------------------------------------------------------------------
    async def insert_jobs(
        self,
        conn: AsyncConnection | None,
        rows: Sequence[dict[str, Any]],
        callbacks: Sequence[dict[str, Any]],
        created: str,
        synchronous: bool = True,
        limits: Sequence[dict[str, Any]] = (),
    ) -> Inserted:
        if conn is not None:  # inside the caller's transaction: through SQLAlchemy's cursor
            return await insert_with(through(conn), rows, callbacks, created, synchronous, limits)
        # Jobs with a callback_url, or a batch's with limits, add one side-table insert, in
        # the same transaction; the others stay one statement in its own implicit one.
        apart = callbacks or (limits and _enqueue_name(rows, limits) != FRESH_LIMITED)
        async with self.db.raw(transaction=bool(apart)) as raw:

            async def fetch(sql: str, args: Sequence[Any]) -> Sequence[Any]:
                return await raw.fetch(sql, *args, timeout=COMMAND_TIMEOUT)  # type: ignore[no-any-return]

            # The duplicates' rows are committed: ON CONFLICT waited for them.
            return await insert_with(fetch, rows, callbacks, created, synchronous, limits)

    async def insert_workflow(
        self, conn: AsyncConnection, rows: WorkflowInsert, created: str
    ) -> StoredWorkflow | None:
        return await insert_workflow_with(through(conn), rows, created)

    async def insert_workflow_steps(
        self, conn: AsyncConnection, rows: WorkflowInsert, created: str
    ) -> None:
        await insert_steps_with(through(conn), rows, created)

    async def arm_claim(self) -> None:
        """Open the next claim's transaction now (its BEGIN), so that the claim a wake-up
        starts is the claim statement alone before its jobs start. For an idle worker only
        (store/claims.py): the pooled connection is held, idle in an empty transaction (no
        snapshot, no transaction id), until that claim or `disarm_claim`. When the last
        claim was of one queue, the next one is too (the same idle worker's): its BEGIN
        also sets the plan cache to the generic plan for this transaction only
        (`claim_begin_generic`, in the same message), so the claim is not planned again."""
        if self._armed is not None:
            return
        generic = self._one_queue_last
        stack = contextlib.AsyncExitStack()
        raw = await stack.enter_async_context(self.db.raw())
        try:
            await stack.enter_async_context(_begun(raw, generic))
        except BaseException:
            await stack.aclose()
            raise
        if self._armed is not None:  # another worker of this driver armed meanwhile
            await stack.aclose()
            return
        self._armed = (stack, raw, generic)

    async def disarm_claim(self) -> None:
        """End an armed, unused claim transaction (empty: its COMMIT writes nothing)."""
        armed, self._armed = self._armed, None
        if armed is not None:
            await armed[0].aclose()

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        every_queue: bool,
        limit: int,
        lease: tuple[datetime, datetime],
        said: Said,
        early: Callable[[list[ClaimedJob]], None] | None = None,
    ) -> Claimed:
        start = (worker_id, *lease, said.type, said.state, json.dumps(said.data))
        one_queue = not every_queue and len(queues) == 1
        self._one_queue_last = one_queue
        armed, self._armed = self._armed, None
        # A claim of one queue in a transaction (armed, told early, or after limited
        # candidates) runs `claim_one`'s generic plan (no planning); every other claim is
        # planned for its values: `claim_one`'s range condition costs the planner more
        # than an equality (it reads the index's edges), so a busy worker of one queue
        # claiming in one statement uses `claim_queue` (docs/design.md "Idle latency"),
        # of several queues `claim`.
        together = early is not None or self._limited_last
        generic_tx = armed is None and one_queue and together  # BEGIN readies claim_one
        which: str | list[str] = list(queues)
        name = "claim_any" if every_queue else "claim"
        if one_queue:
            which = queues[0]
            generic = generic_tx or (armed is not None and armed[2])
            name = "claim_one" if generic else "claim_queue"
            if generic and self._limited_last and not self._probing:
                # Limited candidates again, none refused lately: picked without the probe,
                # and admitted in the same statement unless the last could not be.
                name = "claim_one_unprobed" if self._not_at_once else "claim_one_admit"
        args = (SQL[name], which, limit, start)
        # Told early: BEGIN, the claim, then the commit (and its WAL flush) while the jobs
        # start; otherwise one statement in its own transaction, one round trip. Limited
        # candidates add their admission (`_admit_at_once`, else `_admit`) in the claim's
        # transaction, or in one of its own, which locks and checks them again. A driver
        # whose last claim had limited candidates opens the transaction anyway: BEGIN and
        # COMMIT cost two round trips, a second commit's WAL flush costs more. An armed
        # transaction (`arm_claim`) is the claim's, whichever it is: its BEGIN is paid (a
        # generic one is put back to the session's plan cache mode first for a claim of
        # several queues: another worker's, sharing this driver).
        if armed is None and early is None and one_queue and self._admits_in_claim():
            # Busy, and limited candidates again with nothing refused lately: the claim and
            # their admission are one statement in its own transaction.
            name = "claim_admit"
            async with self.db.raw() as raw:
                rows = await raw.fetch(SQL[name], queues[0], limit, *start, timeout=COMMAND_TIMEOUT)
                claimed = await self._admitted(raw, rows, start, False)
        elif armed is not None:
            stack, raw, generic = armed
            async with stack:  # COMMIT on the way out; an error rolls back
                if generic and not one_queue:
                    await raw.execute(SQL["claim_plan_default"], timeout=COMMAND_TIMEOUT)
                claimed = await self._claim_on(raw, *args, True, early)
        elif generic_tx:
            # A transaction anyway: its BEGIN readies `claim_one`'s generic plan in the
            # same message, so this claim is not planned either (0.5 ms a claim of 64).
            async with self.db.raw() as raw, _begun(raw, True):
                claimed = await self._claim_on(raw, *args, True, early)
        else:
            async with self.db.raw(transaction=together) as raw:
                claimed = await self._claim_on(raw, *args, together, early)
        if self._slots_made > ANALYZE_AFTER + ANALYZE_GROWTH * self._slots_analyzed:
            await self._analyze_slots()
        unprobed = name in ("claim_one_unprobed", *ADMITTING)
        if unprobed and claimed.refused and len(claimed) < limit:
            await self._claim_the_rest(worker_id, queues, limit, lease, said, early, claimed)
        return claimed

    async def _claim_the_rest(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease: tuple[datetime, datetime],
        said: Said,
        early: Callable[[list[ClaimedJob]], None] | None,
        claimed: Claimed,
    ) -> None:
        """After a `claim_one_unprobed` whose refusals took room in its LIMIT: the runnable
        jobs behind them, claimed now with the probe, added to `claimed` (an idle worker
        would otherwise wait for its next wake-up with them queued). Its own transaction:
        the first claim has committed, so its failure must not take the first's jobs with
        it (the worker would never run them: running until the rescue, an attempt spent);
        the rest are still queued for the next claim. Told early after their commit."""
        try:
            more = await self.claim(worker_id, queues, False, limit - len(claimed), lease, said)
        except Exception as exc:
            log.warning("claim after refused candidates failed; they stay queued: %s", exc)
            return
        if early is not None and more:
            early(more)
        claimed.extend(more)
        claimed.refused = dict(Counter(claimed.refused) + Counter(more.refused))
        times = [t for t in (claimed.retry_in, more.retry_in) if t is not None]
        claimed.retry_in = min(times, default=None)

    async def _claim_on(
        self,
        raw: Any,
        statement: str,
        queues: str | list[str],
        limit: int,
        start: tuple[Any, ...],
        together: bool,
        early: Callable[[list[ClaimedJob]], None] | None,
    ) -> Claimed:
        """The claim statement on `raw` (in a transaction when `together`), and the
        admission of its limited candidates; `early` told the jobs before the commit. In a
        transaction begun by `claim_begin_generic` the claim is `claim_one`, which gives
        the admission's statements the usual plan settings back as it runs."""
        rows = await raw.fetch(statement, queues, limit, *start, timeout=COMMAND_TIMEOUT)
        if statement == SQL["claim_one_admit"]:
            claimed = await self._admitted(raw, rows, start, together)
            if early is not None and claimed:
                early(claimed)
            return claimed
        claimed = Claimed(_claimed(row) for row in rows if row[0] is not None)
        waiting = rows[0]["waiting"] if rows else None
        self._note_limited(bool(claimed), bool(waiting))
        if waiting and together:
            if not await self._admit_at_once(raw, waiting, start, claimed):
                await self._admit(raw, waiting, start, claimed)
        elif waiting:
            await self._admit_after(raw, waiting, start, claimed, at_once=True)
        if waiting:
            refused = admission.PROBE_AFTER_REFUSAL if claimed.refused else 0
            self._probing = max(refused, self._probing - 1)
        if early is not None and claimed:
            early(claimed)
        return claimed

    def _note_limited(self, picked: bool, limited: bool) -> None:
        """Whether the last claim that picked anything had limited candidates: the next
        claim's statement. A claim that found nothing (a worker's after each finish, idle)
        says nothing about the queue's jobs: it left the next wake-up's limited claim to
        `claim_one` and `limit_start`, two statements, not `claim_one_admit` (+0.5 ms of a
        limited job's idle latency)."""
        if picked or limited:
            self._limited_last = limited

    def _admits_in_claim(self) -> bool:
        """The last claim had limited candidates, none refused lately, and the last fast
        admission did not fall back: `claim_admit` serves the next claim of one queue."""
        return self._limited_last and not self._probing and not self._not_at_once

    async def _admitted(
        self, raw: Any, rows: Sequence[Any], start: tuple[Any, ...], together: bool
    ) -> Claimed:
        """The jobs an `ADMITTING` claim started. When it could not admit its limited
        candidates at once (not `fast`: nothing written for them), the general admission
        of those: in the claim's transaction when `together`, else after it
        (`_admit_after`)."""
        claimed = Claimed(_claimed(row) for row in rows if row[0] is not None)
        answer = rows[0]
        self._note_limited(bool(claimed), bool(answer["limited"]))
        if answer["waiting"] and together:
            self._not_at_once = FALLBACK_EVERY
            await self._admit(raw, answer["waiting"], start, claimed)
        elif answer["waiting"]:
            self._not_at_once = FALLBACK_EVERY
            await self._admit_after(raw, answer["waiting"], start, claimed, at_once=False)
        else:
            claimed.refused = dict(Counter(answer["refused"] or ()))
            self._note_made(answer["made"])
        if self._limited_last:
            self._probing = admission.PROBE_AFTER_REFUSAL if claimed.refused else 0
        return claimed

    async def _admit_after(
        self,
        raw: Any,
        waiting: Sequence[str],
        start: tuple[Any, ...],
        claimed: Claimed,
        at_once: bool,
    ) -> None:
        """The admission of the limited candidates `waiting` after a claim that committed
        its other jobs (`claimed`): `limit_start` when `at_once`, else or when that cannot
        serve, the general admission in a transaction of its own; each locks and checks
        the candidates again. A failure here leaves them queued and `claimed` as it was:
        raised, it took the claim's committed jobs with it, and the worker never ran them
        (running until the rescue, an attempt spent)."""
        admitted = Claimed()
        try:
            if not (at_once and await self._admit_at_once(raw, waiting, start, admitted)):
                async with raw.transaction():
                    await self._admit(raw, waiting, start, admitted)
        except Exception as exc:
            log.warning("admission after a claim failed; its candidates stay queued: %s", exc)
            return
        claimed.extend(admitted)
        claimed.refused, claimed.retry_in = admitted.refused, admitted.retry_in

    def _note_made(self, made: int) -> None:
        self._slots_made += made

    async def _analyze_slots(self) -> None:
        """Refresh limit_slots' statistics: a burst of new keys fills the table within
        seconds, and until autovacuum's next ANALYZE (a minute or more) every plan cached
        meanwhile reads it as empty and scans all of it for each slot (measured in the
        flow bench: 3x the admission's CPU and 2x the finish's, docs/flow-control.md)."""
        self._slots_analyzed += self._slots_made
        self._slots_made = 0
        with contextlib.suppress(Exception):  # statistics only: the claim succeeded
            async with self.db.raw() as raw:
                await raw.execute(SQL["limit_slots_analyze"], timeout=COMMAND_TIMEOUT)

    async def _admit_at_once(
        self, raw: Any, waiting: Sequence[str], start: tuple[Any, ...], claimed: Claimed
    ) -> bool:
        """Admit the limited candidates `waiting` in one statement (`limit_start`) when each
        is under exactly one limit, a concurrency limit with a size. False: not tried, or
        not that simple and nothing written (`_admit` does it then). After a claim it could
        not serve, the next FALLBACK_EVERY go to `_admit` straight away, so a worker whose
        jobs are under rates or several limits pays one round trip in that many for trying."""
        if self._not_at_once:
            self._not_at_once -= 1
            return False
        rows = await raw.fetch(SQL["limit_start"], list(waiting), *start, timeout=COMMAND_TIMEOUT)
        if not rows or not rows[0]["fast"]:
            self._not_at_once = FALLBACK_EVERY
            return False
        claimed.extend(_claimed(row) for row in rows if row[0] is not None)
        claimed.refused = dict(Counter(rows[0]["refused"] or ()))
        self._note_made(rows[0]["made"])
        return True

    async def _admit(
        self, raw: Any, waiting: Sequence[str], start: tuple[Any, ...], claimed: Claimed
    ) -> None:
        """Start those of the limited candidates `waiting` (claim order) that every limit
        they are under admits, adding them to `claimed` (store/admission.py). `start`: the
        worker, the lease (now, end) and the started event's type, state and data."""
        now = start[1]
        found = await raw.fetch(
            SQL["limit_demands"], list(waiting), now, timeout=COMMAND_TIMEOUT
        )  # with the slots and buckets its keys lacked, made
        demands = [admission.Demand(*row[:8]) for row in found]
        self._note_made(found[0]["made"] if found else 0)
        if not demands:
            return
        free: dict[tuple[str, str], list[int]] = {}
        if slots := admission.wanted(demands):
            names, keys = [p[0] for p in slots], [p[1] for p in slots]
            sizes, needs = [v[0] for v in slots.values()], [v[1] for v in slots.values()]
            taken = await raw.fetch(
                SQL["limit_slots_free"], names, keys, sizes, needs, timeout=COMMAND_TIMEOUT
            )
            for name, key, slot in taken:
                free.setdefault((name, key), []).append(slot)
        buckets: dict[tuple[str, str], admission.Bucket] = {}
        if rates := admission.rated(demands):
            names, keys = [p[0] for p in rates], [p[1] for p in rates]
            for name, key, tokens, at in await raw.fetch(
                SQL["rate_buckets_lock"], names, keys, timeout=COMMAND_TIMEOUT
            ):
                buckets[(name, key)] = admission.Bucket(tokens, at)
        plan = admission.plan(waiting, demands, free, buckets, now)
        claimed.refused, claimed.retry_in = plan.refused, plan.retry_in
        if not plan.admitted:
            return
        holds, spent = plan.holds, list(plan.buckets.items())
        rows = await raw.fetch(
            SQL["limit_admit"], plan.admitted, *start,
            [h[0] for h in holds], [h[1] for h in holds], [h[2] for h in holds],
            [h[3] for h in holds],
            [p[0][0] for p in spent], [p[0][1] for p in spent], [p[1] for p in spent],
            timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
        claimed.extend(_claimed(row) for row in rows)

    async def finish(
        self, worker_id: str, now: datetime, batches: Sequence[FinishBatch]
    ) -> set[str]:
        accepted: set[str] = set()
        several = len(batches) > 1
        async with self.db.raw(transaction=several) as raw:
            if several:  # several statements: all their rows locked first, in id order
                # Their events carry the transaction's id, which locking rows assigns: it
                # is marked as writing events first (store/outbox.py's horizon).
                await raw.execute(SQL["lock_events"], timeout=COMMAND_TIMEOUT)
                ids = [o.job_id for batch in batches for o in batch.outcomes]
                await raw.execute(SQL["lock_mine"], worker_id, ids, timeout=COMMAND_TIMEOUT)
            for batch in batches:
                args = [worker_id, now, *_finish_args(batch)]
                rows = await raw.fetch(SQL[_STATEMENT[batch.kind]], *args, timeout=COMMAND_TIMEOUT)
                accepted.update(row[0] for row in rows)
        return accepted

    async def heartbeat(self, worker_id: str, now: datetime, until: datetime) -> set[str]:
        """The worker's row, then its running jobs' leases, locked in the one order."""
        async with self.db.write() as conn:
            alive = update(workers).where(workers.c.id == worker_id)
            await conn.execute(alive.values(last_heartbeat_at=now))
            mine = [jobs.c.worker_id == worker_id, jobs.c.state == JobState.RUNNING.value]
            renewed = (
                update(jobs)
                .where(self.in_lock_order(mine), *mine)
                .values(lease_expires_at=until)
                .returning(jobs.c.id)
            )
            return {row.id for row in await conn.execute(renewed)}

    async def set_progress(
        self, fence: Fence, percent: int, message: str | None, said: Said, now: datetime
    ) -> bool:
        worker_id, job_id, attempt = fence
        async with self.db.raw() as raw:
            done = await raw.fetch(
                SQL["progress"], worker_id, job_id, attempt, now, percent, message,
                said.type, said.state, json.dumps(said.data), timeout=COMMAND_TIMEOUT,
            )  # fmt: skip
        return bool(done)

    async def promote(self, now: datetime, limit: int) -> Sequence[Any]:
        waiting = [JobState.SCHEDULED.value, JobState.RETRYING.value]
        due = (
            select(jobs.c.id)
            .where(jobs.c.state.in_(waiting), jobs.c.run_at <= now)
            .order_by(jobs.c.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        promoted = (
            update(jobs)
            .where(jobs.c.id.in_(due.scalar_subquery()), jobs.c.state.in_(waiting))
            .values(state=JobState.QUEUED.value)
            .returning(jobs.c.queue)
        )
        async with self.db.write() as conn:
            rows = list((await conn.execute(promoted)).all())
            if rows:
                await self.notify_jobs(conn, {row.queue for row in rows})
        return rows

    async def rescue(self, now: datetime, limit: int) -> Sequence[Any]:
        async with self.db.write() as conn:
            rows = (await conn.exec_driver_sql(SQL["rescue"], (now, now.isoformat(), limit))).all()
            if rows:  # their events keyed after the events lock (store/outbox.py's horizon)
                await self.lock_events(conn)
                await outbox.record(conn, self.xid(), rescued_events(rows, now))
                await self.notify_jobs(conn, requeued_queues(rows))
        return rows

    # ---- wake-ups and leadership ------------------------------------------------------
    async def notify_jobs(self, conn: AsyncConnection, queues: set[str]) -> None:
        # Delivered at commit, once per queue per transaction: batching is the debounce.
        for queue in sorted(queues):
            await conn.exec_driver_sql(SQL["notify"], (JOBS_CHANNEL, queue))

    async def notify_cancel(self, conn: AsyncConnection, job_id: str) -> None:
        await conn.exec_driver_sql(SQL["notify"], (CANCEL_CHANNEL, job_id))

    def tell_other_processes(self) -> None:
        self._notifier.poke()

    async def _notify_events(self) -> None:
        async with self.db.raw() as raw:
            await raw.execute(SQL["notify"], EVENTS_CHANNEL, "", timeout=COMMAND_TIMEOUT)

    async def listen(self, on_jobs: Callback, on_cancel: Callback) -> Listener:
        # Back from an outage: claim at once (the jobs' NOTIFYs of the gap are lost).
        listener = PgListener(
            self.dsn,
            {JOBS_CHANNEL: on_jobs, CANCEL_CHANNEL: on_cancel},
            on_reconnect=lambda: on_jobs(""),
            application_name=f"{self.db.application_name} listen",
            pid_sql=SQL["backend_pid"],
        )
        await listener.start(SQL["ping"])
        return listener

    async def listen_events(self, on_events: Callable[[], None]) -> Listener:
        def wake(_payload: str) -> None:
            on_events()

        listener = PgListener(
            self.dsn,
            {EVENTS_CHANNEL: wake, JOBS_CHANNEL: wake},
            on_reconnect=on_events,
            application_name=f"{self.db.application_name} events",
            pid_sql=SQL["backend_pid"],
        )
        await listener.start(SQL["ping"])
        return listener

    def leadership(self, name: str, holder: str, ttl: float) -> Leadership:
        return AdvisoryLeadership(
            self.dsn,
            name,
            (SQL["try_lead"], SQL["unlead"], SQL["lead_ping"]),
            application_name=f"{self.db.application_name} lead {name}"[:63],
            pid_sql=SQL["backend_pid"],
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # its connection goes with the pool anyway
            await self.disarm_claim()
        await self._notifier.close()


_STATEMENT = {"completed": "complete", "retry": "retry", "failed": "fail"}


# Runs one of this file's statements ($n parameters) on some connection; the rows it returns.
Run = Callable[[str, Sequence[Any]], Awaitable[Sequence[Any]]]


@contextlib.asynccontextmanager
async def _begun(raw: Any, generic: bool) -> AsyncIterator[None]:
    """A transaction on `raw` opened by one message: BEGIN, and with `generic` the claim's
    plan cache mode (asyncpg's `transaction()` sends BEGIN alone); COMMIT when the block
    ends, ROLLBACK when it raises (a connection that cannot roll back is closed: not
    reused)."""
    await raw.execute(SQL["claim_begin_generic"] if generic else "BEGIN", timeout=COMMAND_TIMEOUT)
    try:
        yield
    except BaseException:
        if not raw.is_closed():
            try:
                await raw.execute("ROLLBACK", timeout=COMMAND_TIMEOUT)
            except Exception:  # the claim's own error is the one to raise
                raw.terminate()
        raise
    await raw.execute("COMMIT", timeout=COMMAND_TIMEOUT)


def through(conn: AsyncConnection) -> Run:
    """`Run` on a service's transaction: the named statements through SQLAlchemy's cursor."""

    async def run(sql: str, args: Sequence[Any]) -> Sequence[Any]:
        result = await conn.exec_driver_sql(sql, tuple(args))
        return result.all() if result.returns_rows else []

    return run


async def insert_with(
    run: Run,
    rows: Sequence[dict[str, Any]],
    callbacks: Sequence[dict[str, Any]],
    created: str,
    synchronous: bool = True,
    limits: Sequence[dict[str, Any]] = (),
) -> Inserted:
    """`insert_jobs`'s statements, in one transaction whoever holds it: the pool's (asyncpg),
    a service's (SQLAlchemy), or a library caller's own connection (store/foreign.py), so
    that every way in writes the same rows with the same SQL."""
    now = rows[0]["created_at"]
    # One job (a single submit): scalars, not one-element arrays (postgres.sql says why).
    name = _enqueue_name(rows, limits)
    statement = SQL[name]
    columns = _enqueue_one_args(rows[0]) if len(rows) == 1 else _enqueue_args(rows)
    fair = rows[0]["fair_key"] if len(rows) == 1 else [r["fair_key"] for r in rows]
    limited = rows[0]["limited"] if len(rows) == 1 else [r["limited"] for r in rows]
    traced = rows[0]["trace_context"] if len(rows) == 1 else [r["trace_context"] for r in rows]
    args = (*columns, created, synchronous, *_unique_args(rows), fair, limited, traced)
    if len(rows) > 1:
        args = tuple(_null_if_empty(arg) for arg in args)
    if name == FRESH_LIMITED:  # its limits in its statement
        args = (*args, *_limit_args(limits)[1:])
    inserted = {r[0] for r in await run(statement, args)}
    mine = [c for c in callbacks if c["job_id"] in inserted]
    if mine:
        await run(SQL["record_callbacks"], _callback_args(mine, now))
    held = [x for x in limits if x["job_id"] in inserted]
    if held and name != FRESH_LIMITED:
        await run(SQL["record_limits"], _limit_args(held))
    dupes = [r for r in rows if r["id"] not in inserted]
    found: Sequence[Any] = []
    live: Sequence[Any] = []
    if keyed := _key_args(dupes, "idempotency_key"):
        found = await run(SQL["existing"], keyed)
    if keyed := _key_args(dupes, "unique_key"):
        live = await run(SQL["existing_unique"], keyed)
    return Inserted(inserted, _existing(found), _live(live))


async def insert_workflow_with(
    run: Run, rows: WorkflowInsert, created: str
) -> StoredWorkflow | None:
    """`insert_workflow`'s statements, in one transaction whoever holds it (a service's, or
    a library caller's: store/foreign.py): the workflow row, then (unless its idempotency
    key names a stored one: that one's id and fingerprint, nothing inserted) its steps
    (`insert_steps_with`). The events lock comes first: the workflow row assigns the
    transaction's id, and the events are keyed after the lock (as `xid()` keys them)."""
    await run(SQL["lock_events"], ())
    w = rows.workflow
    added = await run(
        SQL["workflow_insert"],
        (w["id"], w["owner_id"], w["name"], w["state"], w["created_at"],
         w["on_dependency_failure"], w["idempotency_key"], w["fingerprint"]),
    )  # fmt: skip
    if not added:
        ((found, fingerprint),) = await run(
            SQL["workflow_keyed"], (w["owner_id"], w["idempotency_key"])
        )
        return StoredWorkflow(found, fingerprint)
    await insert_steps_with(run, rows, created)
    return None


async def insert_steps_with(run: Run, rows: WorkflowInsert, created: str) -> None:
    """A workflow's steps (all, or a slice of them after `insert_workflow_with`, in its
    transaction): their jobs rows with their created events and NOTIFYs in one statement,
    their edges in one, their job_limits rows in one, whatever the width."""
    w, steps, edges, limits = rows.workflow, rows.steps, rows.edges, rows.limits
    columns = _enqueue_args(steps)
    args = (
        *columns, w["id"], _compact([s["fair_tag"] for s in steps]),
        _compact([s["limited"] for s in steps]), [s["trace_context"] for s in steps],
        [s["step"] for s in steps], created, [s["on_dependency_failure"] for s in steps],
        [s["ready_at"] for s in steps], [s["fair_key"] for s in steps],
    )  # fmt: skip
    await run(SQL["workflow_steps"], tuple(_null_if_empty(arg) for arg in args))
    if edges:  # a join's edges share their job, a fan-out's their dependency
        ends = [e["job_id"] for e in edges], [e["depends_on"] for e in edges]
        await run(SQL["workflow_edges"], (*map(_compact, ends), w["id"]))
    if limits:
        await run(SQL["record_limits"], _limit_args(limits))


FRESH_LIMITED = "enqueue_fresh_limited"


def _enqueue_name(rows: Sequence[dict[str, Any]], limits: Sequence[dict[str, Any]]) -> str:
    """A batch's statement, or a single job's: `enqueue_fresh` (no ON CONFLICT) when it has
    no key that could make it a duplicate, with its limits' rows when it has limits
    (`enqueue_fresh_limited`: two more arguments), else `enqueue_one`. The same arguments."""
    if len(rows) > 1:
        return "enqueue"
    row = rows[0]
    if row["idempotency_key"] is not None or row["unique_key"] is not None:
        return "enqueue_one"
    return FRESH_LIMITED if limits else "enqueue_fresh"


_ENQUEUED = (
    "id", "owner_id", "queue", "type", "payload", "priority", "state", "max_attempts",
    "run_at", "timeout_s", "idempotency_key", "tags", "schedule_id",
)  # fmt: skip


# The NOT NULL columns of `_ENQUEUED` that `enqueue` and `workflow_steps` take as one value
# when the whole batch shares it (their `coalesce`).
_SHARED = frozenset(
    ("owner_id", "queue", "type", "priority", "state", "max_attempts", "run_at", "tags")
)


def _enqueue_args(rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Column arrays for the enqueue statement ($13 is the shared created_at)."""
    names = _ENQUEUED
    columns: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in names}
    columns["payload"] = [_json_text(p) for p in columns["payload"]]
    columns["tags"] = [_json_text(t) for t in columns["tags"]]
    arrays = [_compact(columns[name]) if name in _SHARED else columns[name] for name in names]
    return [*arrays[:12], rows[0]["created_at"], arrays[12]]


def _compact(column: list[Any]) -> list[Any]:
    """A NOT NULL column whose every value is the same, as that one value: the statement's
    `coalesce` gives it to every row. asyncpg checks and encodes each element it sends (an
    `isinstance` against collections.abc per element, ~0.3 us, and its encoding): most of a
    batch's columns are the same for every job (its owner, queue, type, state, due time)."""
    if len(column) > 1 and column.count(column[0]) == len(column):
        return column[:1]
    return column


def _enqueue_one_args(row: dict[str, Any]) -> list[Any]:
    """$1-$14 of `enqueue_one`: the same values as `_enqueue_args`, one job's, as scalars."""
    values = [row[name] for name in _ENQUEUED]
    values[4], values[11] = _json_text(row["payload"]), _json_text(row["tags"])
    return [*values[:12], row["created_at"], values[12]]


def _null_if_empty(column: Any) -> Any:
    """A column array of nothing but NULLs (a batch without idempotency keys, unique keys,
    timeouts, traces: most batches) sent as one NULL: `enqueue`'s multi-argument unnest pads
    a NULL array with NULLs, the same rows. asyncpg checks every element it encodes (whether
    it is a nested array: an `isinstance` against collections.abc each), ~0.3 us a value."""
    if isinstance(column, list) and column.count(None) == len(column):
        return None
    return column


def _json_text(value: Any) -> str:
    """`value` (a checked payload, a tag list: JSON's types only) as JSON text for a jsonb
    column; an empty payload or tag list (most jobs' tags, many payloads) without the
    encoder's call (a 500-job batch's arguments: 1.2 -> 0.2 ms). pydantic-core's encoder:
    json.dumps' Python layers cost a payload ~2.5 us, this ~0.4 us; the same JSON but for
    spaces, which jsonb drops. What it cannot encode (a lone surrogate) goes to json.dumps,
    whose text the server refuses as before."""
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return json.dumps(value)


def _callback_args(rows: Sequence[dict[str, Any]], now: datetime) -> tuple[Any, ...]:
    return (
        [r["job_id"] for r in rows],
        [r["owner_id"] for r in rows],
        [r["url"] for r in rows],
        now,
    )


def _limit_args(rows: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
    return [r["job_id"] for r in rows], [r["name"] for r in rows], [r["key"] for r in rows]


def _finish_args(batch: FinishBatch) -> list[Any]:
    """$3.. of a finish statement: ids, attempts, results or errors, [run_at | result],
    then each event's data and the events' type and state."""
    outcomes = batch.outcomes
    args: list[Any] = [[o.job_id for o in outcomes], [o.attempt for o in outcomes]]
    if batch.kind == "completed":
        args.append([_json_or_none(o.result) for o in outcomes])
    else:
        args.append([json.dumps(error) for error in batch.errors])
    if batch.kind == "retry":
        args.append([o.retry_at for o in outcomes])
    elif batch.kind == "failed":  # what a failed job did finish, if it says so
        args.append([_json_or_none(o.result) for o in outcomes])
    args.append([json.dumps(said.data) for said in batch.events])
    return [*args, batch.events[0].type, batch.events[0].state]


def _unique_args(rows: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
    """$17, $18 of the enqueue statements: unique_key and unique_states (arrays, or a
    single job's scalars)."""
    if len(rows) == 1:
        return rows[0]["unique_key"], rows[0]["unique_states"]
    return [r["unique_key"] for r in rows], [r["unique_states"] for r in rows]


def _existing(rows: Sequence[Any]) -> dict[tuple[str, str | None], Existing]:
    return {(r[2], r[3]): Existing(r[0], r[1], r[4], r[5], _json_value(r[6])) for r in rows}


def _live(rows: Sequence[Any]) -> dict[str, tuple[str, str]]:
    return {r[2]: (r[0], r[1]) for r in rows}


def _json_value(value: Any) -> Any:
    """A jsonb value as the pool's codec decodes it (already), or as text if not."""
    return json.loads(value) if isinstance(value, str) else value


def _key_args(rows: Sequence[dict[str, Any]], column: str) -> tuple[list[str], list[str]] | None:
    """(owners, keys) of the rows that have a `column` key; None when none has."""
    keyed = [r for r in rows if r[column] is not None]
    if not keyed:
        return None
    return [r["owner_id"] for r in keyed], [r[column] for r in keyed]


def _claimed(row: Any) -> ClaimedJob:
    """A claimed row; the pool's connections decode jsonb already (SQLAlchemy's codec)."""
    return ClaimedJob(
        id=row[0],
        type=row[1],
        queue=row[2],
        payload=row[3],
        attempt=row[4],
        max_attempts=row[5],
        timeout_s=row[6],
        priority=row[7],
        owner_id=row[8],
        idempotency_key=row[9],
        run_at=row[10],
        trace_context=row[11],
        workflow_id=row[12],
        step=row[13],
        depends=bool(row[14]),
    )


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
