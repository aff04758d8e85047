"""A claim admits its limited candidates (both DBs): started with their events beside the
unlimited jobs in one claim, slots and tokens taken, refusals and the next token told."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, text

from conveyor.domain.flow import Concurrency, Rate
from conveyor.domain.jobs import Outcome
from conveyor.domain.states import JobState
from conveyor.errors import Unavailable
from conveyor.store.backend import QueueBackend
from conveyor.store.drivers.postgres import SQL
from conveyor.store.tables import events, limit_slots, rate_buckets
from tests.store.helpers import job
from tests.store.test_limits import limited

W = "worker-a"


async def _started(backend: QueueBackend) -> dict[str, object]:
    """Each job with a `running` event: the event's data."""
    query = select(events.c.job_id, events.c.data).where(events.c.state == "running")
    async with backend.db.read() as conn:
        return {r.job_id: r.data for r in (await conn.execute(query)).all()}


async def _holders(backend: QueueBackend) -> dict[str, set[tuple[str, str]]]:
    query = select(limit_slots.c.job_id, limit_slots.c.name, limit_slots.c.key).where(
        limit_slots.c.job_id.isnot(None)
    )
    out: dict[str, set[tuple[str, str]]] = {}
    async with backend.db.read() as conn:
        for r in (await conn.execute(query)).all():
            out.setdefault(r.job_id, set()).add((r.name, r.key))
    return out


async def test_one_claim_starts_limited_and_unlimited_jobs_with_their_events(
    backend: QueueBackend,
) -> None:
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    a1, a2 = await backend.enqueue(
        [limited(("c", "a"), n=1, priority=5), limited(("c", "a"), n=2, priority=5)]
    )
    (plain,) = await backend.enqueue([job(n=3)])
    (b1,) = await backend.enqueue([limited(("c", "b"), n=4)])
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert {c.id for c in claimed} == {a1.id, plain.id, b1.id}
    # a2 was a candidate (a's slot was free when the scan probed it), then refused.
    assert claimed.refused == {"c": 1} and claimed.retry_in is None
    by_id = {c.id: c for c in claimed}
    assert by_id[a1.id].attempt == 1 and by_id[a1.id].payload == {"n": 1}
    started = await _started(backend)
    assert set(started) == {a1.id, plain.id, b1.id}
    assert all(data == {"worker_id": W} for data in started.values())
    assert await _holders(backend) == {a1.id: {("c", "a")}, b1.id: {("c", "b")}}
    assert (await backend.get(a2.id)).state is JobState.QUEUED
    running = [await backend.get(i) for i in (a1.id, plain.id, b1.id)]
    assert {(r.state, r.worker_id) for r in running} == {(JobState.RUNNING, W)}


async def test_a_job_under_a_concurrency_and_a_rate_takes_a_slot_and_a_token(
    backend: QueueBackend,
) -> None:
    """Concurrency 1 and a rate of 2 (refilling one an hour) per key, on the same jobs."""
    await backend.define_limits(
        [Concurrency("c", 1, key="owner"), Rate("r", 1, per_s=3600, key="owner", burst=2)]
    )
    jobs = await backend.enqueue([limited(("c", "o"), ("r", "o"), n=i) for i in range(3)])
    (first,) = await backend.claim(W, ["default"], 10, 30)
    assert first.id == jobs[0].id
    assert await _holders(backend) == {first.id: {("c", "o")}}
    # Finishing frees the slot; the second job takes it and the second token.
    await backend.finish(W, [Outcome(first.id, 1, "completed")])
    (second,) = await backend.claim(W, ["default"], 10, 30)
    assert second.id == jobs[1].id
    async with backend.db.read() as conn:
        (tokens,) = (await conn.execute(select(rate_buckets.c.tokens))).scalars().all()
    assert 0 <= tokens < 0.01
    # The third has a slot once the second is done, but no token: refused by the rate,
    # and the claim says when the next token comes (about an hour).
    await backend.finish(W, [Outcome(second.id, 1, "completed")])
    assert await backend.claim(W, ["default"], 10, 30) == []  # the probe leaves it out
    assert (await backend.get(jobs[2].id)).state is JobState.QUEUED
    assert await _holders(backend) == {}


async def test_a_rate_refusal_in_the_claim_says_when_the_next_token_comes(
    backend: QueueBackend,
) -> None:
    """Two candidates of one rate key with one token: the first starts, the second is
    refused by the rate in the same claim, with the wait for its next token."""
    await backend.define_limits([Rate("r", 1, per_s=60, key="owner")])
    a, b = await backend.enqueue([limited(("r", "o"), n=1), limited(("r", "o"), n=2)])
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert [c.id for c in claimed] == [a.id]
    assert claimed.refused == {"r": 1}
    assert claimed.retry_in is not None and 55 < claimed.retry_in <= 60
    assert (await backend.get(b.id)).state is JobState.QUEUED


async def test_claims_over_many_keys_keep_each_key_to_its_limit_from_the_first_claim(
    backend: QueueBackend,
) -> None:
    """A drain in small claims, a finish between them: each key runs at most its 2 at
    once from the first claim (no slot made beforehand), every job starts once, the slots
    a key gets are made one claim at a time and never beyond 1..2, and the ones still
    queued when a key is full are told as refusals by that limit."""
    await backend.define_limits([Concurrency("c", 2, key="payload.k")])
    queued = await backend.enqueue([limited(("c", f"k{i % 4}"), n=i) for i in range(24)])
    keys = {q.id: f"k{i % 4}" for i, q in enumerate(queued)}
    running: list[str] = []
    started: list[str] = []
    refused = 0
    for _ in range(200):
        claimed = await backend.claim(W, ["default"], 5, 30)
        refused += claimed.refused.get("c", 0)
        running += [c.id for c in claimed]
        started += [c.id for c in claimed]
        per_key = [keys[i] for i in running]
        assert max((per_key.count(k) for k in set(per_key)), default=0) <= 2
        assert set(await _holders(backend)) == set(running)
        if not running:
            break
        done = running.pop(0)
        assert await backend.finish(W, [Outcome(done, 1, "completed")]) == {done}
    assert sorted(started) == sorted(keys)
    assert refused > 0  # claims of 5 over 4 keys of 2: some candidates found their key full
    async with backend.db.read() as conn:
        slots = (await conn.execute(select(limit_slots.c.key, limit_slots.c.slot))).all()
    assert {s.slot for s in slots} == {1, 2} and len(slots) == 8


async def test_claims_that_made_many_slots_refresh_their_statistics(backend: QueueBackend) -> None:
    """PostgreSQL: a burst of new keys fills limit_slots within a claim or two; the claims
    then ANALYZE it, so that plans stop reading it as the empty table it was (the release
    trigger's UPDATE and the admission then find a slot by index, not by a scan of all)."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    async with backend.db.write() as conn:
        await conn.execute(text("ANALYZE limit_slots"))  # empty: what the drain starts from
    await backend.enqueue([limited(("c", f"k{i}"), n=i) for i in range(80)])
    assert len(await backend.claim(W, ["default"], 80, 30)) == 80
    query = text("SELECT reltuples FROM pg_class WHERE oid = 'limit_slots'::regclass")
    async with backend.db.read() as conn:
        assert (await conn.execute(query)).scalar() == 80


async def test_the_admission_reads_its_candidates_limits_by_primary_key(
    backend: QueueBackend,
) -> None:
    """PostgreSQL: `limit_start` and `limit_demands` probe job_limits by primary key for
    each locked candidate, however many queued jobs have limits: joined, the planner took
    the candidates for fewer than they are and hashed every row of job_limits per claim."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    plans = await _admission_plans(backend, slots_made=False)
    for name in ("limit_start", "limit_demands"):
        scans = _scans(plans[name])
        assert ("Seq Scan", "job_limits") not in scans, name
        assert ("Index Scan", "job_limits") in scans, name


async def _admission_plans(backend: QueueBackend, *, slots_made: bool) -> dict[str, dict[str, Any]]:
    """The plans (EXPLAIN, FORMAT JSON) of the admission's statements for 64 of 3,000
    queued jobs over 1,000 keys of a limit of 2, with fresh statistics; `slots_made`: the
    keys' slots made already by earlier claims (a drain's steady state)."""
    await backend.define_limits([Concurrency("c", 2, key="payload.k")])
    for start in range(0, 3000, 500):
        await backend.enqueue(
            [limited(("c", f"k{i % 1000}"), n=i) for i in range(start, start + 500)]
        )
    plans: dict[str, dict[str, Any]] = {}
    async with backend.db.write() as conn:
        if slots_made:
            await conn.execute(
                text(
                    "INSERT INTO limit_slots (name, key, slot)"
                    " SELECT 'c', 'k' || k, s FROM generate_series(0, 999) AS k,"
                    " generate_series(1, 2) AS s"
                )
            )
        await conn.execute(text("ANALYZE"))
        ids = (await conn.execute(text("SELECT id FROM jobs ORDER BY id LIMIT 64"))).scalars()
        wanted = list(ids)
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        now = datetime.now(UTC)
        event = ("started", "running", "null")
        for name, args in (
            ("limit_start", (wanted, W, now, now, *event)),
            ("limit_demands", (wanted, now)),
            ("claim_admit", ("default", 64, W, now, now, *event)),
        ):
            plan = await driver.fetchval(f"EXPLAIN (FORMAT JSON) {SQL[name]}", *args)
            plan = json.loads(plan) if isinstance(plan, str) else plan  # the pool decodes JSON
            plans[name] = plan[0]["Plan"]
        await conn.rollback()
    return plans


def _scans(node: dict[str, Any]) -> set[tuple[str, str]]:
    """(node type, relation) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    found = {(node["Node Type"], node.get("Relation Name", ""))}
    for child in node.get("Plans", ()):
        found |= _scans(child)
    return found


def _statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the pool's asyncpg connections send from now on (one round trip
    each), as the text's first line; but what a task of the driver's own sends on another
    connection at any moment: the notifier's NOTIFYs (the enqueues' wake-ups), and the
    pool's housekeeping on that connection (a new session's SETs, the ping of one idle for
    a second: seen in CI between a claim's statement and its COMMIT)."""
    sent: list[str] = []
    for name in ("execute", "fetch", "fetchrow", "fetchval", "executemany"):
        original = getattr(asyncpg.Connection, name)

        async def counted(self: Any, query: str, *args: Any, _o: Any = original, **kw: Any) -> Any:
            if query != SQL["notify"] and not _housekeeping(query):
                sent.append(query.strip().splitlines()[0])
            return await _o(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.Connection, name, counted)
    return sent


def _housekeeping(query: str) -> bool:
    """The pool's own statements (store/database.py): `_set_up_session`'s SETs and the
    checkout's ping (`;`)."""
    return query == ";" or query.startswith("SET idle_in_transaction_session_timeout")


async def test_a_limited_jobs_single_submit_is_one_statement(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a single submit of a job under limits stores its limit keys in its
    insert statement, in that statement's own transaction (`enqueue_fresh_limited`): it
    took four round trips (BEGIN, the insert, `record_limits`, COMMIT), half a
    millisecond of a limited job's idle latency. Its keys hold as a batch's do."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's statements")
    await backend.define_limits([Concurrency("c", 1, key="payload.k"), Concurrency("d", 2)])
    sent = _statements(monkeypatch)
    (one,) = await backend.enqueue([limited(("c", "k0"), ("d", "all"), n=0)])
    assert len(sent) == 1, sent
    (other,) = await backend.enqueue([limited(("c", "k0"), n=1)])
    (claimed,) = await backend.claim(W, ["default"], 10, 30)
    assert claimed.id == one.id and other.id != one.id  # the other waits for "c"/"k0"
    assert await _holders(backend) == {one.id: {("c", "k0"), ("d", "all")}}


async def test_a_busy_workers_next_limited_claim_is_one_statement(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: once a claim had limited candidates and refused none, the next claim
    of a busy worker (nothing told early) picks, admits and starts limited and unlimited
    jobs in one statement and its own commit (`claim_admit`): it took four round trips
    (BEGIN, the claim, `limit_start`, COMMIT)."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's statements")
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    await backend.enqueue([limited(("c", "k0"), n=0)])
    (first,) = await backend.claim(W, ["default"], 1, 30)
    more = await backend.enqueue([limited(("c", f"k{i}"), n=i) for i in range(1, 4)])
    (plain,) = await backend.enqueue([job(n=9)])
    sent = _statements(monkeypatch)
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert len(sent) == 1, sent
    assert {c.id for c in claimed} == {*(m.id for m in more), plain.id}
    assert claimed.refused == {}
    holders = await _holders(backend)
    ids = [first.id, *(m.id for m in more)]
    assert holders == {job_id: {("c", f"k{i}")} for i, job_id in enumerate(ids)}
    assert set(await _started(backend)) == {first.id, plain.id, *(m.id for m in more)}


async def test_an_idle_workers_next_limited_claim_is_one_statement_in_its_transaction(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the same for a worker claiming idle (its jobs told early, before the
    commit): BEGIN, one statement on the generic plan (`claim_one_admit`), COMMIT. The
    claim and `limit_start` were two statements, each locking the candidates."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's statements")
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    await backend.enqueue([limited(("c", "k0"), n=0)])
    await backend.claim(W, ["default"], 1, 30)
    more = await backend.enqueue([limited(("c", f"k{i}"), n=i) for i in range(1, 4)])
    (plain,) = await backend.enqueue([job(n=9)])
    told: list[str] = []
    sent = _statements(monkeypatch)
    claimed = await backend.claim(
        W, ["default"], 10, 30, early=lambda jobs: told.extend(j.id for j in jobs)
    )
    assert [s.split()[0] for s in sent] == ["BEGIN;", "WITH", "COMMIT"], sent
    assert {c.id for c in claimed} == set(told) == {*(m.id for m in more), plain.id}
    assert set(await _holders(backend)) >= {m.id for m in more}


async def test_an_empty_claim_leaves_the_next_idle_limited_claim_one_statement(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a worker claims again after each finish and, idle, finds nothing; that
    claim said nothing about the queue's jobs, so the next wake-up's claim of a limited job
    is still `claim_one_admit`. It went back to `claim_one` and `limit_start`: two
    statements, half a millisecond of a limited job's idle latency (the flow bench: woken
    1.1-1.3 ms against 0.6-0.8 for a plain job)."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's statements")
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])

    def early(jobs: list[Any]) -> None:
        pass

    for n in range(2):
        await backend.enqueue([limited(("c", f"k{n}"), n=n)])
        sent = _statements(monkeypatch)
        (claimed,) = await backend.claim(W, ["default"], 10, 30, early=early)
        await backend.finish(W, [Outcome(claimed.id, claimed.attempt, "completed")])
        assert await backend.claim(W, ["default"], 10, 30, early=early) == []
        monkeypatch.undo()
    assert [s.split()[0] for s in sent[:3]] == ["BEGIN;", "WITH", "COMMIT"], sent


async def test_a_claim_that_cannot_admit_at_once_admits_in_a_transaction_of_its_own(
    backend: QueueBackend,
) -> None:
    """A candidate under a rate in a claim that would admit at once (PostgreSQL's
    `claim_admit`): nothing is written for it there; the general admission starts it
    in the same call, with its token spent, beside the claim's unlimited job."""
    await backend.define_limits(
        [Concurrency("c", 1, key="payload.k"), Rate("r", 1, per_s=3600, key="owner", burst=2)]
    )
    await backend.enqueue([limited(("c", "k0"), n=0)])
    await backend.claim(W, ["default"], 1, 30)
    (rated,) = await backend.enqueue([limited(("r", "o"), n=1)])
    (plain,) = await backend.enqueue([job(n=2)])
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert {c.id for c in claimed} == {rated.id, plain.id}
    async with backend.db.read() as conn:
        (tokens,) = (await conn.execute(select(rate_buckets.c.tokens))).scalars().all()
    assert 0.99 < tokens < 1.01
    assert set(await _started(backend)) >= {rated.id, plain.id}


@pytest.mark.parametrize("first", [True, False], ids=["first claim", "claim_admit"])
async def test_a_failed_admission_after_the_claim_keeps_the_claims_jobs(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch, first: bool
) -> None:
    """PostgreSQL: a busy worker's claim commits its unlimited jobs before the general
    admission of its other limited candidates runs apart (its first claim with limited
    candidates, and `claim_admit` when it cannot admit at once). When that admission
    fails (the database went away between the two), the claim still answers the committed
    jobs (raised, it took them with it: running, never run, until the rescue) and the
    candidates stay queued."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's admission apart from the claim")
    await backend.define_limits(
        [Concurrency("c", 1, key="payload.k"), Rate("r", 1, per_s=3600, key="owner")]
    )
    if not first:
        await backend.enqueue([limited(("c", "k0"), n=0)])
        await backend.claim(W, ["default"], 1, 30)  # the next claim is claim_admit
    (rated,) = await backend.enqueue([limited(("r", "o"), n=1)])
    (plain,) = await backend.enqueue([job(n=2)])

    async def away(*args: Any) -> None:
        raise Unavailable("the database went away")

    monkeypatch.setattr(backend.driver, "_admit", away)
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert [c.id for c in claimed] == [plain.id]
    assert (await backend.get(plain.id)).state is JobState.RUNNING
    assert (await backend.get(rated.id)).state is JobState.QUEUED


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


async def test_the_fast_admission_probes_limits_and_takes_slots_per_candidate(
    backend: QueueBackend,
) -> None:
    """PostgreSQL: `claim_admit` and `limit_start` read each candidate's limits by key
    (not a hash of job_limits or flow_limits built per candidate: 0.5 ms of a claim of
    64), and take the slots they found by address, each looked up once (the UPDATE
    scanned the found slots once per slot: quadratic in the claim)."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    plans = await _admission_plans(backend, slots_made=True)
    for name in ("limit_start", "claim_admit"):
        nodes = list(_nodes(plans[name]))
        hashed = {
            n.get("Relation Name") for h in nodes if h["Node Type"] == "Hash"
            for n in _nodes(h)
        }  # fmt: skip
        assert not hashed & {"job_limits", "flow_limits"}, (name, hashed)
        (taking,) = [
            n for n in nodes
            if n["Node Type"] == "ModifyTable" and n.get("Operation") == "Update"
            and n.get("Relation Name") == "limit_slots"
        ]  # fmt: skip
        scans = {n["Node Type"] for n in _nodes(taking) if n.get("Relation Name")}
        assert scans == {"ModifyTable", "Tid Scan"}, (name, scans)
        per_slot = [
            n for n in nodes
            if n.get("Parent Relationship") == "SubPlan" and n.get("CTE Name") == "given"
        ]  # fmt: skip
        assert not per_slot, name
