"""The dashboard's job table: text search, whitelisted sorting, offset pages with a total."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import SORT_KEYS, ErrorInfo, JobFilter, JobRecord, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput
from conveyor.services.jobs import JobService
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry


def service(backend: QueueBackend) -> JobService:
    return JobService(backend, Registry())


async def add(backend: QueueBackend, **fields: Any) -> str:
    fields.setdefault("payload", {})
    (enqueued,) = await backend.enqueue([NewJob(type=fields.pop("type", "noop"), **fields)])
    return enqueued.id


async def test_text_finds_by_id_fragment_and_payload_fragment_in_any_case(
    backend: QueueBackend,
) -> None:
    report = await add(backend, payload={"name": "Alpha_Report"})
    lookalike = await add(backend, payload={"name": "alphaXreport"})
    percent = await add(backend, payload={"note": "100%"})
    thousand = await add(backend, payload={"note": "1000"})
    accented = await add(backend, payload={"city": "Besançon", "note": "x\\y"})
    jobs = service(backend)

    async def found(text: str, **where: Any) -> set[str]:
        page = await jobs.page(JobFilter(text=text, **where))
        assert page.total == len(page.items)
        return {j.id for j in page.items}

    assert await found("ALPHA") == {report, lookalike}
    assert await found("alpha_r") == {report}  # _ is a character, not "any one character"
    assert await found("100%") == {percent}  # % is a character, not "anything"
    assert await found("%") == {percent}
    assert await found('"note": "1000"') == {thousand}  # the payload's JSON text
    assert await found(thousand[-10:].upper()) == {thousand}  # a fragment of the id
    assert await found("alpha", owner_id="someone-else") == set()
    assert await found("besançon") == {accented}  # stored as \u00e7 by SQLite
    assert await found("x\\\\y") == {accented}  # a backslash as the JSON text spells it
    # The cursor listing honours the same filter.
    listed = await backend.list_jobs(JobFilter(text="alpha"))
    assert {j.id for j in listed} == {report, lookalike}


async def varied_jobs(backend: QueueBackend) -> None:
    """Jobs that differ in every sortable column, including missing finish times."""
    now = utcnow()
    specs = [
        {"type": "bravo", "queue": "q", "priority": 5},
        {"type": "alpha", "queue": "p", "priority": -1, "run_at": now + timedelta(hours=2)},
        {"type": "delta", "queue": "r", "priority": 5},
        {"type": "charlie", "queue": "p", "priority": 9, "run_at": now + timedelta(hours=1)},
        {"type": "alpha", "queue": "q", "priority": 0},
        {"type": "echo", "queue": "r", "priority": 3},
    ]
    for spec in specs:
        await add(backend, max_attempts=1, **spec)
    (first,) = await backend.claim("w", ["q"], 1, 30)
    await backend.finish("w", [Outcome(first.id, 1, "completed", result=1)])
    (second,) = await backend.claim("w", ["r"], 1, 30)
    await backend.finish("w", [Outcome(second.id, 1, "failed", error=ErrorInfo("E", "x"))])
    await backend.claim("w", ["q"], 1, 30)  # left running


def expected(jobs: list[JobRecord], key: str, descending: bool) -> list[str]:
    """Python's idea of the order: by the column, then the id, missing values last."""
    present = [j for j in jobs if getattr(j, key) is not None]
    missing = [j for j in jobs if getattr(j, key) is None]
    present.sort(key=lambda j: (getattr(j, key), j.id), reverse=descending)
    missing.sort(key=lambda j: j.id, reverse=descending)
    return [j.id for j in present + missing]


@pytest.mark.parametrize("descending", [False, True])
async def test_every_sort_key_orders_correctly(backend: QueueBackend, descending: bool) -> None:
    await varied_jobs(backend)
    jobs = service(backend)
    everything = (await jobs.page(JobFilter(), limit=100)).items
    assert len(everything) == 6
    assert {j.state for j in everything} >= {JobState.COMPLETED, JobState.FAILED}
    for key in SORT_KEYS:
        sort = f"-{key}" if descending else key
        page = await jobs.page(JobFilter(), sort=sort, limit=100)
        assert [j.id for j in page.items] == expected(everything, key, descending), sort


async def test_offset_pages_cover_everything_once_and_total_counts_the_filter(
    backend: QueueBackend,
) -> None:
    for n in range(7):
        await add(backend, payload={"n": n}, type="paged")
    await add(backend, type="other")
    jobs = service(backend)
    where = JobFilter(type="paged")
    pages = [await jobs.page(where, sort="created_at", offset=o, limit=3) for o in (0, 3, 6, 9)]
    assert [len(p.items) for p in pages] == [3, 3, 1, 0]
    assert {p.total for p in pages} == {7}
    ids = [j.id for p in pages for j in p.items]
    assert len(set(ids)) == 7
    assert [j.payload["n"] for p in pages for j in p.items] == list(range(7))


@pytest.mark.parametrize("sort", ["payload", "id; drop table jobs", "--created_at", "", "owner_id"])
async def test_sort_keys_outside_the_whitelist_are_invalid(
    backend: QueueBackend, sort: str
) -> None:
    with pytest.raises(InvalidInput):
        await service(backend).page(JobFilter(), sort=sort)


async def test_offset_and_limit_are_bounded(backend: QueueBackend) -> None:
    jobs = service(backend)
    for offset, limit in ((-1, 10), (0, 0), (0, 100_000)):
        with pytest.raises(InvalidInput):
            await jobs.page(JobFilter(), offset=offset, limit=limit)


async def test_throughput_has_one_point_per_minute_with_zeros_and_failure_rate(
    backend: QueueBackend,
) -> None:
    for _ in range(3):
        await add(backend, max_attempts=1)
    ok, bad = await backend.claim("w", ["default"], 2, 30)
    await backend.finish("w", [Outcome(ok.id, 1, "completed")])
    await backend.finish("w", [Outcome(bad.id, 1, "failed", error=ErrorInfo("E", "x"))])
    await add(backend, owner_id="bob")
    jobs = service(backend)

    chart = await jobs.throughput(minutes=5, owner_id="system")
    assert len(chart) == 5
    assert all(b.minute - a.minute == timedelta(minutes=1) for a, b in pairwise(chart))
    assert chart[-1].minute <= utcnow() < chart[-1].minute + timedelta(minutes=1)
    totals = [sum(getattr(p, f) for p in chart) for f in ("enqueued", "completed", "failed")]
    assert totals == [3, 1, 1]
    busy = [p for p in chart if p.completed or p.failed]
    assert sum(p.failed for p in busy) / sum(p.completed + p.failed for p in busy) == 0.5
    assert [p.failure_rate for p in chart if p not in busy] == [None] * (5 - len(busy))
    everyone = await jobs.throughput(minutes=5)
    assert sum(p.enqueued for p in everyone) == 4
    with pytest.raises(InvalidInput):
        await jobs.throughput(minutes=0)
