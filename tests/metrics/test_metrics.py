"""The metrics move as jobs run: through the API and an in-process worker, on each database.

Metric objects live for the whole test process, so every test uses a queue of its own and
reads HTTP counters as differences between two scrapes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.domain.jobs import ClaimedJob
from conveyor.domain.states import TERMINAL, JobState
from conveyor.metrics import JobMetrics, count_enqueued, render, set_queue_gauges, set_relay_lag
from conveyor.metrics.gauges import QueueCountLike
from tests.api.conftest import Api, api_settings, running_api
from tests.metrics import handlers
from tests.metrics.samples import Samples

# The jobs each flow submits: two complete, one is retried then completes, one fails.
FLOW = ("noop", "noop", "metrics_flaky", "metrics_doomed")


def fresh_queue() -> str:
    return f"metrics-{uuid.uuid4().hex[:10]}"


async def scrape(api: Api, headers: dict[str, str]) -> Samples:
    r = await api.client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Samples(r.text)


async def scrape_until(
    api: Api, headers: dict[str, str], ready: Callable[[Samples], bool], within: float = 15.0
) -> Samples:
    """Scrape until `ready` holds: outcomes count after their batch commits, gauges refresh
    in the background, so both lag the database by a moment."""
    deadline = time.monotonic() + within
    while True:
        samples = await scrape(api, headers)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def submit(api: Api, headers: dict[str, str], queue: str, job_type: str) -> str:
    r = await api.client.post(
        "/api/v1/jobs", json={"type": job_type, "queue": queue, "payload": {}}, headers=headers
    )
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


async def run_until_finished(api: Api, queue: str, ids: list[str]) -> None:
    """Run a worker on `queue` until every job is terminal; promote the retried one (the
    scheduler's job, not running here)."""
    worker = api.engine.worker(queue, concurrency=4)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(300):
            await api.engine.backend.promote_due()
            states = [(await api.engine.jobs.get(job_id)).state for job_id in ids]
            if all(state in TERMINAL for state in states):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"jobs did not finish: {states}")
    finally:
        worker.stop(force=True)
        await task


def claims_carry_run_at() -> bool:
    """Queue wait needs the claim's run_at (asked of the store; absent, nothing is observed)."""
    return "run_at" in {f.name for f in fields(ClaimedJob)}


@pytest.fixture
async def flow_api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(
        db_url, tmp_path, handler_modules=handlers.MODULE, metrics_refresh_interval=0.05
    )
    async with running_api(settings) as api:
        yield api


async def test_job_counters_and_timings_move_with_the_right_labels(flow_api: Api) -> None:
    api = flow_api
    admin = await api.admin()
    ada = await api.user("ada@example.com")
    queue = fresh_queue()

    ids = [await submit(api, ada, queue, job_type) for job_type in FLOW]
    repeat = {**ada, "Idempotency-Key": "once"}
    for expected in (201, 200):  # the repeat returns the first job and is not counted
        r = await api.client.post(
            "/api/v1/jobs", json={"type": "noop", "queue": queue}, headers=repeat
        )
        assert r.status_code == expected, r.text
    ids.append(r.json()["id"])
    await run_until_finished(api, queue, ids)

    def job(name: str, job_type: str, s: Samples) -> float:
        return s.get(f"conveyor_jobs_{name}_total", queue=queue, type=job_type)

    s = await scrape_until(api, admin, lambda s: job("failed", "metrics_doomed", s) == 1)
    assert job("enqueued", "noop", s) == 3
    assert job("enqueued", "metrics_flaky", s) == 1
    assert job("enqueued", "metrics_doomed", s) == 1
    assert job("started", "noop", s) == 3
    assert job("started", "metrics_flaky", s) == 2  # the failed attempt and the retry
    assert job("started", "metrics_doomed", s) == 1
    assert job("completed", "noop", s) == 3
    assert job("completed", "metrics_flaky", s) == 1
    assert job("retried", "metrics_flaky", s) == 1
    assert job("failed", "metrics_doomed", s) == 1
    assert job("failed", "noop", s) == job("retried", "noop", s) == 0
    assert job("completed", "metrics_doomed", s) == job("retried", "metrics_doomed", s) == 0

    runs = {t: s.get("conveyor_job_run_seconds_count", queue=queue, type=t) for t in set(FLOW)}
    assert runs == {"noop": 3, "metrics_flaky": 2, "metrics_doomed": 1}
    run_sum = s.get("conveyor_job_run_seconds_sum", queue=queue, type="noop")
    assert 0 < run_sum < 5
    waited = s.get("conveyor_job_queue_wait_seconds_count", queue=queue, type="noop")
    assert waited == (3 if claims_carry_run_at() else 0)


async def test_queue_gauges_come_from_the_database(flow_api: Api) -> None:
    api = flow_api
    admin = await api.admin()
    ada = await api.user("ada@example.com")
    queue = fresh_queue()
    ids = [await submit(api, ada, queue, job_type) for job_type in FLOW]

    def depth(state: JobState, s: Samples) -> float:
        return s.get("conveyor_queue_jobs", queue=queue, state=state.value)

    s = await scrape_until(api, admin, lambda s: depth(JobState.QUEUED, s) == 4)
    assert depth(JobState.QUEUED, s) == 4
    assert s.get("conveyor_queue_oldest_job_age_seconds", queue=queue, state="queued") >= 0
    assert s.get("conveyor_workers_alive") == 0

    worker = api.engine.worker(queue, concurrency=4, burst=False)
    task = asyncio.create_task(worker.run())
    try:
        s = await scrape_until(api, admin, lambda s: s.get("conveyor_workers_alive") == 1)
        assert s.get("conveyor_workers_alive") == 1
    finally:
        worker.stop(force=True)
        await task
    await run_until_finished(api, queue, ids)

    def settled(s: Samples) -> bool:
        finished = depth(JobState.COMPLETED, s) == 3 and depth(JobState.FAILED, s) == 1
        return finished and s.get("conveyor_workers_alive") == 0

    s = await scrape_until(api, admin, settled)
    assert depth(JobState.COMPLETED, s) == 3  # two noops and the retried job
    assert depth(JobState.FAILED, s) == 1
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING, JobState.SCHEDULED):
        assert s.has("conveyor_queue_jobs", queue=queue, state=state.value)
        assert depth(state, s) == 0
        age = s.get("conveyor_queue_oldest_job_age_seconds", queue=queue, state=state.value)
        assert age == 0
    assert s.get("conveyor_workers_alive") == 0


async def test_http_metrics_use_the_route_template(flow_api: Api) -> None:
    api = flow_api
    admin = await api.admin()
    ada = await api.user("ada@example.com")
    queue = fresh_queue()
    before = await scrape(api, admin)
    ids = [await submit(api, ada, queue, "noop") for _ in range(3)]
    for job_id in ids:
        assert (await api.client.get(f"/api/v1/jobs/{job_id}", headers=ada)).status_code == 200
    assert (await api.client.get("/no/such/route")).status_code == 404
    assert (await api.client.get("/static/api-docs/favicon.png")).status_code == 200
    after = await scrape(api, admin)

    def delta(name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    requests = "conveyor_http_requests_total"
    assert delta(requests, route="/api/v1/jobs", method="POST", status="201") == 3
    assert delta(requests, route="/api/v1/jobs/{job_id}", method="GET", status="200") == 3
    assert delta(requests, route="unmatched", method="GET", status="404") == 1
    assert delta(requests, route="/static/api-docs/{path}", method="GET", status="200") == 1
    assert delta(requests, route="/metrics", method="GET", status="200") == 1  # `before`
    seconds = "conveyor_http_request_seconds_count"
    assert delta(seconds, route="/api/v1/jobs/{job_id}", method="GET") == 3
    routes = after.label_values(requests, "route")
    assert not [route for route in routes if any(job_id in route for job_id in ids)]


async def test_metrics_are_for_administrators(flow_api: Api) -> None:
    api = flow_api
    assert (await api.client.get("/metrics")).status_code == 401
    ada = await api.user("ada@example.com")
    assert (await api.client.get("/metrics", headers=ada)).status_code == 403
    r = await api.client.get(
        "/metrics",
        headers={**(await api.admin()), "Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


SCRAPE_TOKEN = "scrape-" + "x" * 40


async def test_a_scrape_token_opens_metrics_and_nothing_else(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(db_url, tmp_path, metrics_token=SCRAPE_TOKEN)
    async with running_api(settings) as api:
        scraper = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
        r = await api.client.get("/metrics", headers=scraper)
        assert r.status_code == 200 and "conveyor_jobs_enqueued_total" in r.text
        assert (await api.client.get("/api/v1/jobs", headers=scraper)).status_code == 401
        wrong = {"Authorization": f"Bearer {SCRAPE_TOKEN}y"}
        assert (await api.client.get("/metrics", headers=wrong)).status_code == 401
        assert (await api.client.get("/metrics")).status_code == 401
        assert (await api.client.get("/metrics", headers=await api.admin())).status_code == 200
        ada = await api.user("ada@example.com")
        assert (await api.client.get("/metrics", headers=ada)).status_code == 403


async def test_without_a_scrape_token_setting_no_token_opens_metrics(flow_api: Api) -> None:
    anyone = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    assert (await flow_api.client.get("/metrics", headers=anyone)).status_code == 401


# ---- the feeding functions on their own ----------------------------------------------------
@dataclass(frozen=True)
class Claimed:
    id: str
    queue: str
    type: str
    attempt: int = 1
    run_at: datetime | None = None


@dataclass(frozen=True)
class Result:
    job_id: str
    attempt: int
    kind: str


@dataclass(frozen=True)
class Created:
    created: bool


@dataclass(frozen=True)
class Count:
    queue: str
    state: JobState
    count: int
    oldest_created_at: datetime | None


def local() -> Samples:
    """This process's registry, as the API renders it."""
    body, _ = render(None)
    return Samples(body.decode())


def test_a_fenced_outcome_is_not_counted() -> None:
    queue = fresh_queue()
    jobs = JobMetrics()
    first, second = Claimed("a", queue, "noop"), Claimed("b", queue, "noop")
    for claimed in (first, second):
        jobs.started(claimed)
        jobs.ran(claimed, 0.01)
    jobs.persisted([Result("a", 1, "completed"), Result("b", 1, "completed")], accepted={"a"})
    s = local()
    assert s.get("conveyor_jobs_started_total", queue=queue, type="noop") == 2
    assert s.get("conveyor_jobs_completed_total", queue=queue, type="noop") == 1
    assert s.get("conveyor_job_run_seconds_count", queue=queue, type="noop") == 2
    assert jobs._pending == {}  # nothing kept for the dropped outcome


def test_queue_wait_is_measured_from_run_at() -> None:
    queue = fresh_queue()
    run_at = datetime.now(UTC) - timedelta(minutes=1)
    JobMetrics().started(Claimed("a", queue, "noop", run_at=run_at))
    s = local()
    assert s.get("conveyor_job_queue_wait_seconds_count", queue=queue, type="noop") == 1
    assert s.get("conveyor_job_queue_wait_seconds_sum", queue=queue, type="noop") >= 60


def test_only_new_jobs_count_as_enqueued() -> None:
    queue = fresh_queue()
    count_enqueued([Claimed("a", queue, "noop")] * 2, [Created(True), Created(False)])
    assert local().get("conveyor_jobs_enqueued_total", queue=queue, type="noop") == 1


def test_a_queue_that_empties_reads_zero() -> None:
    queue = fresh_queue()
    now = datetime.now(UTC)
    counts: list[QueueCountLike] = [Count(queue, JobState.QUEUED, 5, now - timedelta(seconds=9))]
    set_queue_gauges(counts, now)
    s = local()
    assert s.get("conveyor_queue_jobs", queue=queue, state="queued") == 5
    assert s.get("conveyor_queue_oldest_job_age_seconds", queue=queue, state="queued") == 9
    set_queue_gauges([], now)  # pruned: the queue has no rows left
    s = local()
    assert s.get("conveyor_queue_jobs", queue=queue, state="queued") == 0
    assert s.get("conveyor_queue_oldest_job_age_seconds", queue=queue, state="queued") == 0


def test_relay_lag_per_sink() -> None:
    sink = f"webhooks-{uuid.uuid4().hex[:6]}"
    set_relay_lag(sink, 12, 3.5)
    s = local()
    assert s.get("conveyor_relay_lag_events", sink=sink) == 12
    assert s.get("conveyor_relay_lag_seconds", sink=sink) == 3.5
