"""Workflows in the store: a DAG written in one transaction, read with its steps and edges.

Release is the database's (migration 0016's triggers): nothing here moves a step out of
`waiting` after it is stored, except a workflow's retry. Every statement that changes a
step's state takes the outbox lock first (`lock_events`), since the triggers may write
events in it (store/outbox.py's horizon).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA
from conveyor.domain.jobs import SYSTEM_OWNER, NewJob
from conveyor.domain.states import JobState
from conveyor.domain.workflows import (
    MAX_DEPTH,
    MAX_STEPS,
    DependencyPolicy,
    StepRecord,
    WorkflowDetail,
    WorkflowRecord,
    WorkflowState,
)
from conveyor.errors import (
    Conflict,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidInput,
    NotFound,
)
from conveyor.store import events as outbox
from conveyor.store.database import after_commit
from conveyor.store.driver import Said, StoredWorkflow, WorkflowInsert
from conveyor.store.jobs import EVENT_COLUMNS, Jobs
from conveyor.store.records import aware, must
from conveyor.store.tables import (
    flow_limits,
    job_dependencies,
    job_limits,
    jobs,
    users,
    workflows,
)
from conveyor.store.transaction import Transaction

_SETTLED = [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED]
_SETTLED_VALUES = [s.value for s in _SETTLED]
_RERUN = {JobState.FAILED.value, JobState.CANCELLED.value, JobState.SKIPPED.value}


async def running_cap(conn: AsyncConnection, owner_id: str) -> int:
    """The owner's running quota as a claim reads it, in `conn`'s transaction: its own cap
    (users.max_running above 0), else the stored default (the `quota.running` limit's); 0:
    no cap. What a submit's `JobService.running_cap` decides, read exactly here (an append,
    a cron fire: docs/flow-control.md, "Running quota")."""
    if owner_id == SYSTEM_OWNER:
        return 0
    own = select(users.c.max_running).where(users.c.id == owner_id).scalar_subquery()
    default = (
        select(flow_limits.c.max_running)
        .where(flow_limits.c.name == RUNNING_QUOTA)
        .scalar_subquery()
    )
    found = (await conn.execute(select(own, default))).one()
    return int(found[0] or 0) if (found[0] or 0) > 0 else int(found[1] or 0)


Links = dict[str, list[str]]  # a workflow's edges by one end: job -> its parents, or children


def links(edges: Sequence[tuple[str, str]]) -> tuple[Links, Links]:
    """(parents, children) of an iterable of (job, depends on) edges."""
    parents: Links = {}
    children: Links = {}
    for job_id, dep in edges:
        parents.setdefault(job_id, []).append(dep)
        children.setdefault(dep, []).append(job_id)
    return parents, children


def _refuse_cycles(
    children: Links,
    new: Sequence[dict[str, Any]],
    depends_on: dict[str, tuple[str, ...]],
    before: Sequence[str],
    ids: dict[str, str],
) -> None:
    """InvalidInput for a dependency on an unknown step, or on a step of `before` or
    behind one (it would wait for itself). `children`: the stored edges by parent."""
    for row in new:
        for dep in depends_on.get(row["step"], ()):
            if dep not in ids:
                raise InvalidInput(f"step {row['step']!r} depends on unknown step {dep!r}")
    if not before:
        return
    behind, todo = {ids[b] for b in before}, [ids[b] for b in before]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in behind:
                behind.add(child)
                todo.append(child)
    for row in new:
        if any(ids[d] in behind for d in depends_on.get(row["step"], ())):
            raise InvalidInput(
                f"step {row['step']!r} depends on a step that waits for it", field="before"
            )


def longest_through(edges: Sequence[tuple[str, str]], nodes: Sequence[str]) -> int:
    """The steps on the longest path through any of `nodes` in an acyclic graph of (job,
    depends on) edges (`_longest`)."""
    return _longest(*links(edges), nodes)


def _longest(parents: Links, children: Links, nodes: Sequence[str]) -> int:
    """For each of `nodes`, its longest path up (its ancestors) plus its longest path down
    (its descendants), itself once: the longest of them. Only the steps above and below
    them are walked (each once), not the whole graph."""
    up, down = _depths(parents, nodes), _depths(children, nodes)
    return max((up[n] + down[n] - 1 for n in nodes), default=1)


def _depths(step_links: Links, starts: Sequence[str]) -> dict[str, int]:
    """The steps on the longest path from each node reached from `starts` along `step_links`
    (itself included), memoized, without recursion."""
    depth: dict[str, int] = {}
    for start in starts:
        stack = [start]
        while stack:
            node = stack[-1]
            if node in depth:
                stack.pop()
                continue
            pending = [n for n in step_links.get(node, ()) if n not in depth]
            if pending:
                stack.extend(pending)
                continue
            depth[node] = 1 + max((depth[n] for n in step_links.get(node, ())), default=0)
            stack.pop()
    return depth


async def _edges(
    conn: AsyncConnection, starts: Sequence[str], *, up: bool
) -> list[tuple[str, str]]:
    """The (job, depends on) edges above `starts` (their ancestors'; `up`) or below them
    (their descendants'), one recursive query; none without starts."""
    if not starts:
        return []
    edge = job_dependencies
    near = edge.c.job_id if up else edge.c.depends_on
    seed = select(edge.c.job_id, edge.c.depends_on).where(near.in_(list(dict.fromkeys(starts))))
    walk = seed.cte("walk", recursive=True)
    further = (edge.c.job_id == walk.c.depends_on) if up else (edge.c.depends_on == walk.c.job_id)
    walk = walk.union(select(edge.c.job_id, edge.c.depends_on).join(walk, further))
    rows = await conn.execute(select(walk.c.job_id, walk.c.depends_on))
    return [(row.job_id, row.depends_on) for row in rows]


def _refuse_depth(
    parents: Links, children: Links, added: Sequence[tuple[str, str]], new: Sequence[str]
) -> None:
    """InvalidInput when the workflow's graph, appended steps included, has a chain longer
    than MAX_DEPTH: a failure cascades down it one nested trigger per step, and both
    databases bound that nesting (docs/workflows.md, "Limits"); a submit refuses it too.
    Every new edge (`added`, put into `parents` and `children`) touches a `new` step, so
    only chains through them can have grown."""
    for job_id, dep in added:
        parents.setdefault(job_id, []).append(dep)
        children.setdefault(dep, []).append(job_id)
    length = _longest(parents, children, new)
    if length > MAX_DEPTH:
        raise InvalidInput(
            f"a chain of dependencies is at most {MAX_DEPTH} steps long; these steps would "
            f"make one of {length}, so none was appended",
            field="steps",
        )


def stored_workflow(workflow: dict[str, Any], found: StoredWorkflow) -> str:
    """The id of the stored workflow a new one's idempotency key named, when it was stored
    from the same declaration; IdempotencyKeyReused (409) when from another. Every way in
    (a service's transaction, a library caller's: store/foreign.py) answers so."""
    if found.fingerprint != workflow["fingerprint"]:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for another workflow (another declaration: "
            f"workflow {found.id}); nothing was stored",
            workflow_id=found.id,
        )
    return found.id


@dataclass(frozen=True, slots=True)
class WorkflowRows:
    """What `Workflows.create_workflow` inserts, in one transaction."""

    id: str
    workflow: dict[str, Any]
    steps: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    limits: list[dict[str, Any]]
    jobs: list[NewJob]


class Workflows(Jobs):
    async def create_workflow(self, tx: Transaction, rows: WorkflowInsert) -> str | None:
        """Insert the workflow row, its steps (jobs rows, `waiting` or `queued`), their edges,
        job_limits rows and created events, in `tx`; None. When its (owner, idempotency
        key) names a stored workflow: that one's id, nothing inserted (IdempotencyKeyReused
        when it was stored from another declaration)."""
        conn = tx.connection
        found = await self.driver.insert_workflow(conn, rows, ev.CREATED)
        if found is not None:
            return stored_workflow(rows.workflow, found)
        after_commit(conn, self._events_committed)
        return None

    async def add_workflow_steps(self, tx: Transaction, rows: WorkflowInsert) -> None:
        """More steps of the workflow `create_workflow` inserted in `tx` (a slice of a large
        submit: services/workflows.py), with their edges, job_limits rows and events."""
        await self.driver.insert_workflow_steps(tx.connection, rows, ev.CREATED)

    async def own_queued_cap(self, tx: Transaction, owner_id: str) -> int | None:
        """The owner's own queued cap (users.max_queued; None: the default applies)."""
        query = select(users.c.max_queued).where(users.c.id == owner_id)
        return (await tx.connection.execute(query)).scalar_one_or_none()

    async def get_workflow(self, workflow_id: str, owner_id: str | None = None) -> WorkflowDetail:
        async with self.db.read() as conn:
            return await self._detail(conn, workflow_id, owner_id)

    async def _detail(
        self, conn: AsyncConnection, workflow_id: str, owner_id: str | None
    ) -> WorkflowDetail:
        query = select(workflows).where(workflows.c.id == workflow_id)
        if owner_id is not None:
            query = query.where(workflows.c.owner_id == owner_id)
        row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound("no such workflow", workflow_id=workflow_id)
        steps = (
            await conn.execute(
                select(jobs).where(jobs.c.workflow_id == workflow_id).order_by(jobs.c.id)
            )
        ).all()
        edges = (
            await conn.execute(
                select(job_dependencies.c.job_id, job_dependencies.c.depends_on).where(
                    job_dependencies.c.workflow_id == workflow_id
                )
            )
        ).all()
        return _assembled(row, steps, edges)

    @staticmethod
    def submitted_workflow(rows: WorkflowInsert) -> WorkflowDetail:
        """A workflow as `create_workflow` just inserted it, from its rows: what a read
        would answer, without reading back every step of a large workflow (a third of a
        10,000-step submit's time)."""
        names = {s["id"]: s["step"] for s in rows.steps}
        parents: dict[str, list[str]] = {}
        for edge in rows.edges:
            parents.setdefault(edge["job_id"], []).append(names[edge["depends_on"]])
        records = tuple(
            _submitted_step(s, tuple(sorted(parents.get(s["id"], ()))))
            for s in sorted(rows.steps, key=_by_key)
        )
        counts = Counter(s.state.value for s in records)
        workflow = SimpleNamespace(**(rows.workflow | {"settled_at": None}))
        return WorkflowDetail(_workflow_record(workflow, len(records), counts), records)

    async def page_workflows(
        self,
        owner_id: str | None,
        state: WorkflowState | None,
        limit: int,
        before: str | None,
    ) -> list[WorkflowRecord]:
        query = select(workflows)
        if owner_id is not None:
            query = query.where(workflows.c.owner_id == owner_id)
        if state is not None:
            query = query.where(workflows.c.state == state.value)
        if before is not None:
            query = query.where(workflows.c.id < before)
        query = query.order_by(workflows.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
            ids = [r.id for r in rows]
            counted = (
                await conn.execute(
                    select(jobs.c.workflow_id, jobs.c.state, func.count())
                    .where(jobs.c.workflow_id.in_(ids))
                    .group_by(jobs.c.workflow_id, jobs.c.state)
                )
            ).all() if ids else []  # fmt: skip
        counts: dict[str, Counter[str]] = {i: Counter() for i in ids}
        for workflow_id, step_state, n in counted:
            counts[workflow_id][step_state] += n
        return [_workflow_record(r, sum(counts[r.id].values()), counts[r.id]) for r in rows]

    async def cancel_workflow(self, workflow_id: str, owner_id: str | None) -> WorkflowDetail:
        """Every unsettled step cancelled in one statement (running ones interrupted); the
        trigger settles the workflow."""
        async with self.db.write() as conn:
            await self.driver.lock_events(conn)
            await self._detail(conn, workflow_id, owner_id)  # NotFound for another owner's
            guard = [jobs.c.workflow_id == workflow_id]
            await self._cancel_where(conn, guard, utcnow(), (*EVENT_COLUMNS, jobs.c.worker_id))
            return await self._detail(conn, workflow_id, owner_id)

    async def retry_workflow(self, workflow_id: str, owner_id: str | None) -> WorkflowDetail:
        """Failed, cancelled and skipped steps and their descendants run again (queued when
        every dependency is completed and stays so, else waiting); completed steps that
        depend on none of them keep their results."""
        async with self.db.write() as conn:
            await self.driver.lock_events(conn)
            detail = await self._detail(conn, workflow_id, owner_id)
            if detail.workflow.state is WorkflowState.RUNNING:
                raise IllegalTransition(
                    "a running workflow cannot be retried; cancel it or wait for it to settle",
                    current=WorkflowState.RUNNING.value,
                    target=WorkflowState.RUNNING.value,
                )
            rerun = _descendants(detail.steps, {s.name for s in detail.steps if s.state in _RERUN})
            if not rerun:
                return detail
            now = utcnow()
            ready = [
                s.job_id for s in detail.steps
                if s.name in rerun and not any(d in rerun for d in s.depends_on)
            ]  # fmt: skip
            waiting = [s.job_id for s in detail.steps if s.name in rerun and s.job_id not in ready]
            await conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id)
                .values(state=WorkflowState.RUNNING.value, settled_at=None, updated_at=now)
            )
            fresh: dict[str, Any] = {
                "attempt": 0, "worker_id": None, "lease_expires_at": None, "finished_at": None,
                "started_at": None, "result": None, "progress": 0, "progress_message": None,
            }  # fmt: skip
            said: list[dict[str, Any]] = []
            for ids, state in ((waiting, JobState.WAITING), (ready, JobState.QUEUED)):
                if not ids:
                    continue
                values = {**fresh, "state": state.value}
                if state is JobState.QUEUED:
                    values.update(run_at=now, ready_at=now, fair_tag=now.timestamp())
                else:
                    values.update(ready_at=None)
                rows = (
                    await conn.execute(
                        self._update_locked([jobs.c.id.in_(ids)])
                        .values(**values)
                        .returning(*EVENT_COLUMNS)
                    )
                ).all()
                event = Said(state.value, state.value, {"reason": "workflow retried"})
                said.extend(outbox.said_row(event, r, now) for r in rows)
            await self._log(conn, said)
            if ready:
                await self.driver.notify_jobs(
                    conn, {s.queue for s in detail.steps if s.job_id in ready}
                )
            return await self._detail(conn, workflow_id, owner_id)

    async def delete_workflow(self, workflow_id: str, owner_id: str | None) -> None:
        async with self.db.write() as conn:
            detail = await self._detail(conn, workflow_id, owner_id)
            if detail.workflow.state is WorkflowState.RUNNING:
                raise Conflict("a running workflow cannot be deleted; cancel it first")
            await delete_settled(conn, [workflow_id])

    async def step_inputs(self, job_id: str) -> tuple[str, str, dict[str, Any]] | None:
        """(workflow id, step name, {dependency's step: its result}) of a step; None for a
        job that is no step. A skipped dependency has no result (None)."""
        return (await self.steps_inputs([job_id])).get(job_id)

    async def steps_inputs(
        self, job_ids: Sequence[str]
    ) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """`step_inputs` of several steps in one query (a claim's steps: one round trip per
        claim, not per step); jobs that are no step are left out. Each step's results come
        as one JSON object built by the database: a join's 9,999 results as rows through
        SQLAlchemy took 55 ms, on the workflow's critical path (its last step), now about
        10 ms on either database."""
        parent = jobs.alias("parent")
        results = (
            select(self.driver.json_object_agg(parent.c.step, parent.c.result))
            .select_from(
                job_dependencies.join(parent, parent.c.id == job_dependencies.c.depends_on)
            )
            # Its parents are its workflow's steps: said, PostgreSQL reads the workflow's
            # steps once (by uq_jobs_workflow_id_step) for a join of many, 8 ms for 9,999
            # instead of 21 by their ids one at a time, without statistics.
            .where(
                job_dependencies.c.job_id == jobs.c.id,
                parent.c.workflow_id == jobs.c.workflow_id,
            )
            .scalar_subquery()
        )
        query = select(jobs.c.id, jobs.c.workflow_id, jobs.c.step, results.label("results")).where(
            jobs.c.id.in_(list(job_ids)), jobs.c.workflow_id.is_not(None)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {r.id: (r.workflow_id, r.step, r.results or {}) for r in rows}

    async def dependency_runs(
        self, job_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, int, str | None]]]:
        """The steps `job_ids` depend on, as (job id, its last attempt, its trace context)
        per step: what a traced run links its span to (worker/spans.py). One query for a
        claim's steps, made only when tracing is on."""
        parent = jobs.alias("parent")
        query = (
            select(job_dependencies.c.job_id, parent.c.id, parent.c.attempt,
                   parent.c.trace_context)
            .join(parent, parent.c.id == job_dependencies.c.depends_on)
            .where(job_dependencies.c.job_id.in_(list(job_ids)))
        )  # fmt: skip
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, list[tuple[str, int, str | None]]] = {}
        for job_id, dep, attempt, context in rows:
            found.setdefault(job_id, []).append((dep, attempt, context))
        return found

    async def append_steps(
        self,
        parent_id: str,
        steps: Sequence[dict[str, Any]],
        depends_on: dict[str, tuple[str, ...]],
        before: Sequence[str],
        limits: Sequence[dict[str, Any]] = (),
    ) -> list[str]:
        """Steps added at run time by the running step `parent_id`: each waits for it (and
        for its own `depends_on`, by name), and the waiting steps named in `before` wait for
        them too; created events, one transaction. Names already there are left as they
        are (a retried run appending again). The job ids of `steps`, in order."""
        async with self.db.write() as conn:
            await self.driver.lock_events(conn)
            parent = (
                await conn.execute(
                    select(jobs.c.workflow_id, jobs.c.owner_id).where(jobs.c.id == parent_id)
                )
            ).one_or_none()
            if parent is None or parent.workflow_id is None:
                raise InvalidInput("only a workflow's step can append steps")
            workflow_id = parent.workflow_id
            # The workflow's lock, as a settling step's trigger takes it: a finish that is
            # releasing a step of `before` commits first, and that step is then seen queued.
            await conn.execute(
                select(workflows.c.id).where(workflows.c.id == workflow_id).with_for_update()
            )
            stored = {
                r.step: r
                for r in await conn.execute(
                    select(jobs.c.id, jobs.c.step, jobs.c.state).where(
                        jobs.c.workflow_id == workflow_id
                    )
                )
            }
            if len(stored) + len(steps) > MAX_STEPS:
                raise InvalidInput(f"a workflow has at most {MAX_STEPS:,} steps", field="steps")
            new = [row for row in steps if row["step"] not in stored]
            ids = {**{n: r.id for n, r in stored.items()}, **{r["step"]: r["id"] for r in new}}
            for name in before:
                found = stored.get(name)
                if found is None or found.state != JobState.WAITING.value:
                    raise InvalidInput(
                        f"step {name!r} is not a waiting step of this workflow", field="before"
                    )
            if not new:
                return [ids[row["step"]] for row in steps]
            # The stored steps the new ones will hang below (and their ancestors), and those
            # of `before` (and their descendants): only there can a cycle or a longer chain
            # come from, so only those edges are read, not the workflow's every edge.
            above = [parent_id, *(ids[d] for row in new for d in depends_on.get(row["step"], ())
                                  if d in stored)]  # fmt: skip
            parents, children = links(
                [*await _edges(conn, above, up=True),
                 *await _edges(conn, [ids[b] for b in before], up=False)]
            )  # fmt: skip
            _refuse_cycles(children, new, depends_on, before, ids)
            policy = (
                await conn.execute(
                    select(workflows.c.on_dependency_failure).where(workflows.c.id == workflow_id)
                )
            ).scalar_one()
            for row in new:
                row.update(workflow_id=workflow_id)
                row["on_dependency_failure"] = row["on_dependency_failure"] or policy
            edges = [
                {"job_id": row["id"], "depends_on": dep, "workflow_id": workflow_id}
                for row in new
                for dep in dict.fromkeys(
                    (parent_id, *(ids[d] for d in depends_on.get(row["step"], ())))
                )
            ]
            edges += [
                {"job_id": ids[name], "depends_on": row["id"], "workflow_id": workflow_id}
                for name in dict.fromkeys(before)
                for row in new
            ]
            added = [(e["job_id"], e["depends_on"]) for e in edges]
            _refuse_depth(parents, children, added, [row["id"] for row in new])
            mine = [x for x in limits if x["job_id"] in {r["id"] for r in new}]
            if await running_cap(conn, parent.owner_id):  # held as a submitted step's
                quota = [{"job_id": r["id"], "name": RUNNING_QUOTA, "key": parent.owner_id}
                         for r in new]  # fmt: skip
                new = [{**row, "limited": True} for row in new]
                mine += quota
            await conn.execute(insert(jobs), new)
            await conn.execute(insert(job_dependencies), edges)
            if mine:
                await conn.execute(insert(job_limits), mine)
            now = utcnow()
            created = [outbox.event_row(ev.CREATED, _Row(r), r["state"], now) for r in new]
            await self._log(conn, created)
            await conn.execute(
                update(workflows).where(workflows.c.id == workflow_id).values(updated_at=now)
            )
        return [ids[row["step"]] for row in steps]

    async def sweep_waiting(self, limit: int = 500) -> list[str]:
        """The safety net: waiting steps whose dependencies are all settled are re-checked
        (their `dep_checks` bumped: the trigger decides); the ids it touched."""
        parent = jobs.alias("parent")
        open_parent = (
            select(1)
            .select_from(
                job_dependencies.join(parent, parent.c.id == job_dependencies.c.depends_on)
            )
            .where(job_dependencies.c.job_id == jobs.c.id, parent.c.state.not_in(_SETTLED_VALUES))
            .exists()
        )
        async with self.db.write() as conn:
            await self.driver.lock_events(conn)
            ids = list(
                (
                    await conn.execute(
                        select(jobs.c.id)
                        .where(
                            jobs.c.state == JobState.WAITING.value,
                            # Spelled so PostgreSQL's ix_jobs_workflow_open serves it.
                            jobs.c.workflow_id.is_not(None),
                            ~open_parent,
                        )
                        .order_by(jobs.c.id)
                        .limit(limit)
                    )
                ).scalars()
            )
            if ids:
                await conn.execute(
                    self._update_locked([jobs.c.id.in_(ids), jobs.c.state == "waiting"]).values(
                        dep_checks=jobs.c.dep_checks + 1
                    )
                )
        return ids


async def delete_settled(conn: AsyncConnection, ids: list[str]) -> None:
    await conn.execute(delete(job_dependencies).where(job_dependencies.c.workflow_id.in_(ids)))
    await conn.execute(delete(jobs).where(jobs.c.workflow_id.in_(ids)))
    await conn.execute(delete(workflows).where(workflows.c.id.in_(ids)))


class _Row:
    """A step's insert row read as a job row (what `event_row` reads)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.id = row["id"]
        self.owner_id = row["owner_id"]
        self.queue = row["queue"]
        self.type = row["type"]
        self.attempt = 0


def _descendants(steps: Sequence[StepRecord], roots: set[str]) -> set[str]:
    children: dict[str, list[str]] = {}
    for s in steps:
        for d in s.depends_on:
            children.setdefault(d, []).append(s.name)
    found, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _by_key(row: dict[str, Any]) -> str:
    return str(row["id"])


# Members by value, for the records a large submit answers (10,000 of them): a dict lookup
# where the enum's call costs about a microsecond.
_STATE_OF = {state.value: state for state in JobState}
_POLICY_OF = {policy.value: policy for policy in DependencyPolicy}


def _submitted_step(row: dict[str, Any], depends_on: tuple[str, ...]) -> StepRecord:
    """`_step_record` of a step's insert row (nothing has run it yet)."""
    return StepRecord(
        name=row["step"],
        job_id=row["id"],
        type=row["type"],
        queue=row["queue"],
        state=_STATE_OF[row["state"]],
        depends_on=depends_on,
        on_dependency_failure=_POLICY_OF[row["on_dependency_failure"] or "cancel"],
        attempt=0,
        result=None,
        error=None,
        ready_at=aware(row["ready_at"]),
        started_at=None,
        finished_at=None,
    )


def _assembled(row: Any, steps: Sequence[Any], edges: Sequence[Any]) -> WorkflowDetail:
    """A workflow's detail from its row, its steps' rows (in id order) and its edges."""
    names = {s.id: s.step for s in steps}
    parents: dict[str, list[str]] = {}
    for edge in edges:
        parents.setdefault(edge.job_id, []).append(names.get(edge.depends_on, "?"))
    records = tuple(_step_record(s, tuple(sorted(parents.get(s.id, [])))) for s in steps)
    counts = Counter(s.state.value for s in records)
    return WorkflowDetail(_workflow_record(row, len(records), counts), records)


def _step_record(row: Any, depends_on: tuple[str, ...]) -> StepRecord:
    return StepRecord(
        name=row.step,
        job_id=row.id,
        type=row.type,
        queue=row.queue,
        state=JobState(row.state),
        depends_on=depends_on,
        on_dependency_failure=DependencyPolicy(row.on_dependency_failure or "cancel"),
        attempt=row.attempt,
        result=row.result,
        error=(row.errors or [None])[-1],
        ready_at=aware(row.ready_at),
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
    )


def _workflow_record(row: Any, steps: int, counts: Counter[str]) -> WorkflowRecord:
    return WorkflowRecord(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        state=WorkflowState(row.state),
        created_at=must(row.created_at),
        updated_at=must(row.updated_at),
        settled_at=aware(row.settled_at),
        steps=steps,
        counts=dict(counts),
    )
