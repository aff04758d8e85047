"""Cron schedules and their fires: a fire and its job (or its workflow: the fire row's
`job_id` then holds the workflow's id) commit together, once per fire time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import SYSTEM_OWNER, NewJob
from conveyor.domain.schedules import NewSchedule, ScheduleRecord
from conveyor.domain.workflows import spec_json
from conveyor.errors import Conflict, NotFound
from conveyor.store.flow import count_waiting
from conveyor.store.records import must, schedule_record
from conveyor.store.tables import schedule_fires, schedules, users
from conveyor.store.transaction import Transaction
from conveyor.store.workflows import WorkflowRows, Workflows, running_cap


@dataclass(frozen=True, slots=True)
class Fired:
    """What one schedule's fire did: how many fire times fired, or, when the owner's queued
    quota refused them, (cap, waiting, requested)."""

    fired: int
    over_quota: tuple[int, int, int] | None = None


class Schedules(Workflows):
    async def create_schedule(
        self, new: NewSchedule, next_fire_at: datetime | None
    ) -> ScheduleRecord:
        now = utcnow()
        values = {
            "id": new.id,
            "owner_id": new.owner_id,
            "name": new.name,
            "cron": new.cron,
            "timezone": new.timezone,
            "job_type": new.job_type,
            "queue": new.queue,
            "payload": new.payload,
            "priority": new.priority,
            "max_attempts": new.max_attempts,
            "timeout_s": new.timeout_s,
            "tags": list(new.tags),
            "paused": new.paused,
            "misfire_policy": new.misfire_policy,
            "workflow": spec_json(new.workflow) if new.workflow is not None else null(),
            "limits": dict(new.limits) if new.limits else null(),
            "next_fire_at": next_fire_at,
            "last_fire_at": None,
            "created_at": now,
            "updated_at": now,
        }
        # The unique index decides, not a look first: two creates of one name racing on
        # PostgreSQL both saw none, and the loser's INSERT failed as an integrity error (500).
        statement = (
            self.driver.insert(schedules)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["owner_id", "name"])
            .returning(*schedules.c)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(statement)).one_or_none()
        if row is None:
            raise Conflict(f"a schedule named {new.name!r} already exists", name=new.name)
        return schedule_record(row)

    async def get_schedule(self, schedule_id: str, owner_id: str | None = None) -> ScheduleRecord:
        query = select(schedules).where(schedules.c.id == schedule_id)
        if owner_id is not None:
            query = query.where(schedules.c.owner_id == owner_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound("no such schedule", schedule_id=schedule_id)
        return schedule_record(row)

    async def list_schedules(self, owner_id: str | None = None) -> list[ScheduleRecord]:
        query = select(schedules).order_by(schedules.c.name)
        if owner_id is not None:
            query = query.where(schedules.c.owner_id == owner_id)
        async with self.db.read() as conn:
            return [schedule_record(row) for row in await conn.execute(query)]

    async def update_schedule(
        self, schedule_id: str, owner_id: str | None, **values: Any
    ) -> ScheduleRecord:
        guard = [schedules.c.id == schedule_id]
        if owner_id is not None:
            guard.append(schedules.c.owner_id == owner_id)
        values["updated_at"] = utcnow()
        if "tags" in values:
            values["tags"] = list(values["tags"])
        if "workflow" in values:
            values["workflow"] = spec_json(values["workflow"])
        if "limits" in values:
            values["limits"] = dict(values["limits"]) if values["limits"] else null()
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    update(schedules).where(*guard).values(**values).returning(*schedules.c)
                )
            ).one_or_none()
        if row is None:
            raise NotFound("no such schedule", schedule_id=schedule_id)
        return schedule_record(row)

    async def delete_schedule(self, schedule_id: str, owner_id: str | None = None) -> None:
        guard = [schedules.c.id == schedule_id]
        if owner_id is not None:
            guard.append(schedules.c.owner_id == owner_id)
        async with self.db.write() as conn:
            result = await conn.execute(delete(schedules).where(*guard))
        if result.rowcount == 0:
            raise NotFound("no such schedule", schedule_id=schedule_id)

    async def due_schedules(self, now: datetime, limit: int = 100) -> list[ScheduleRecord]:
        query = (
            select(schedules)
            .where(schedules.c.paused.is_(False), schedules.c.next_fire_at <= now)
            .order_by(schedules.c.next_fire_at)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [schedule_record(row) for row in await conn.execute(query)]

    async def owner_running_cap(self, owner_id: str) -> int:
        """The owner's running quota (0: none), as a claim reads it (`running_cap`): a fire
        holds it as a submit does."""
        async with self.db.read() as conn:
            return await running_cap(conn, owner_id)

    async def fire_schedule(
        self,
        schedule: ScheduleRecord,
        fires: Sequence[tuple[datetime, NewJob | WorkflowRows]],
        next_fire_at: datetime,
    ) -> int:
        """`fire_within_quota` without the queued quota: how many fired."""
        return (await self.fire_within_quota(schedule, fires, next_fire_at, None)).fired

    async def fire_within_quota(
        self,
        schedule: ScheduleRecord,
        fires: Sequence[tuple[datetime, NewJob | WorkflowRows]],
        next_fire_at: datetime,
        queued_default: int | None,
    ) -> Fired:
        """Advance the schedule from the `next_fire_at` it was read with, record each fire and
        enqueue its job or create its workflow (steps, edges, limits), all in one
        transaction. A scheduler that read the same state and decided later finds the
        schedule advanced and fires nothing (and a fire time already recorded, whoever
        decided it, is never enqueued twice).

        `queued_default`: the queued quota's default cap (None: not checked). The owner's
        cap (its own, else this; 0: none) is checked in this transaction as a submit's is
        (`count_waiting`: the owner's row locked on PostgreSQL); fires that would take the
        owner past it are all skipped, and the schedule still advances (`Fired.over_quota`)."""
        fired = [fire_at for fire_at, _job in fires]
        advance = {"next_fire_at": next_fire_at}
        if fired:
            advance["last_fire_at"] = max(fired)
        async with self.db.write() as conn:
            won = (
                await conn.execute(
                    update(schedules)
                    .where(
                        schedules.c.id == schedule.id,
                        schedules.c.next_fire_at == schedule.next_fire_at,
                    )
                    .values(**advance)
                    .returning(schedules.c.id)
                )
            ).one_or_none()
            if won is None or not fires:
                return Fired(0)
            if queued_default is not None:
                over = await self._over_queued_quota(conn, schedule.owner_id, fires, queued_default)
                if over is not None:
                    return Fired(0, over)
            created = utcnow()
            claimed = (
                await conn.execute(
                    self.driver.insert(schedule_fires)
                    .values(
                        [
                            {
                                "schedule_id": schedule.id,
                                "fire_at": fire_at,
                                "job_id": fire.id,
                                "created_at": created,
                            }
                            for fire_at, fire in fires
                        ]
                    )
                    .on_conflict_do_nothing(
                        index_elements=[schedule_fires.c.schedule_id, schedule_fires.c.fire_at]
                    )
                    .returning(schedule_fires.c.job_id)
                )
            ).all()
            ids = {row.job_id for row in claimed}
            won_fires = [fire for _fire_at, fire in fires if fire.id in ids]
            tx = Transaction(conn)
            jobs = [fire for fire in won_fires if isinstance(fire, NewJob)]
            if jobs:
                await self.enqueue(jobs, tx=tx)
            for fire in won_fires:
                if isinstance(fire, WorkflowRows):
                    await self.create_workflow(tx, fire)
        return Fired(len(won_fires))

    async def _over_queued_quota(
        self,
        conn: AsyncConnection,
        owner_id: str,
        fires: Sequence[tuple[datetime, NewJob | WorkflowRows]],
        default: int,
    ) -> tuple[int, int, int] | None:
        """(cap, waiting, requested) when the fires would take the owner past its queued
        cap; None when they fit or it has none. A workflow asks for its steps, as a
        workflow submit does."""
        if owner_id == SYSTEM_OWNER:
            return None
        own = (
            await conn.execute(select(users.c.max_queued).where(users.c.id == owner_id))
        ).scalar_one_or_none()
        cap = default if own is None else own
        if cap <= 0:
            return None
        asked = sum(len(f.steps) if isinstance(f, WorkflowRows) else 1 for _at, f in fires)
        waiting = (await count_waiting(conn, self.dialect, {owner_id: cap})).get(owner_id, 0)
        return (cap, waiting, asked) if waiting + asked > cap else None

    async def fires_of(self, schedule_id: str) -> list[tuple[datetime, str]]:
        query = (
            select(schedule_fires.c.fire_at, schedule_fires.c.job_id)
            .where(schedule_fires.c.schedule_id == schedule_id)
            .order_by(schedule_fires.c.fire_at)
        )
        async with self.db.read() as conn:
            return [(must(row.fire_at), row.job_id) for row in await conn.execute(query)]
