"""One trace from an HTTP submit, through the database, into a real worker process.

The API runs in this process with the SDK's in-memory exporter; the worker is a real
`conveyor worker` subprocess configured only by OTEL_* variables, exporting over OTLP/HTTP
to a tiny collector this test serves on 127.0.0.1. The caller's trace id must come out of
the worker: its run spans are children of the request's span, and the retry's run links to
the first attempt's.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.runtime import Engine
from tests.api.conftest import Api, api_settings, running_api
from tests.support.processes import Cluster, eventually
from tests.tracing.collector import Collector

pytestmark = pytest.mark.slow

MODULE = "tests.support.trace_handlers"
CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"


@asynccontextmanager
async def scheduling(engine: Engine) -> AsyncIterator[None]:
    """The scheduler in this process: it brings the retried job back to the queue."""
    scheduler = engine.scheduler()
    task = asyncio.create_task(scheduler.run())
    try:
        yield
    finally:
        scheduler.stop()
        await task


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    try:
        yield running
    finally:
        running.close()


async def _state(api: Api, headers: dict[str, str], job_id: str) -> str:
    r = await api.client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    return str(r.json()["state"])


async def test_the_request_trace_goes_through_the_database_into_the_worker_process(
    db_url: str,
    tmp_path: Path,
    spans: InMemorySpanExporter,
    collector: Collector,
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)  # the worker's environment (Cluster copies ours)
    settings = api_settings(db_url, tmp_path, handler_modules=MODULE, scheduler_interval=0.2)
    async with running_api(settings) as api, scheduling(api.engine):
        headers = await api.admin()
        r = await api.client.post(
            "/api/v1/jobs",
            json={"type": "trace_flaky", "payload": {}},
            headers={**headers, "traceparent": TRACEPARENT},
        )
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        worker = cluster.worker("worker", settings={"handler_modules": MODULE})

        async def completed() -> bool:
            return await _state(api, headers, job_id) == "completed"

        await eventually(completed, timeout=90, what="the job to complete in the worker")
        worker.send(signal.SIGTERM)
        assert await worker.wait_exit(60) == 0  # its last spans exported on the way out

    (request,) = [s for s in spans.get_finished_spans() if s.name == "POST /api/v1/jobs"]
    assert request.context is not None and request.parent is not None
    assert request.context.trace_id == CALLER_TRACE and request.parent.span_id == CALLER_SPAN
    runs = sorted(collector.named("conveyor.run trace_flaky"), key=lambda s: s.attributes[
        "conveyor.job.attempt"])  # fmt: skip
    assert [s.attributes["conveyor.job.attempt"] for s in runs] == [1, 2]
    for run in runs:
        assert run.service == "conveyor-worker"
        assert run.trace_id == CALLER_TRACE
        assert run.parent_id == request.context.span_id
        assert run.attributes["messaging.message.id"] == job_id
        assert run.attributes["messaging.destination.name"] == "default"
        assert run.attributes["messaging.system"] == "conveyor"
    first, second = runs
    assert second.links == [(CALLER_TRACE, first.span_id)]
    assert first.attributes["conveyor.job.outcome"] == "retry"
    assert second.attributes["conveyor.job.outcome"] == "completed"
    waits = collector.named("conveyor.wait")
    assert len(waits) == 2 and {w.parent_id for w in waits} == {request.context.span_id}
    assert any(c.attributes.get("messaging.batch.message_count") for c in collector.named(
        "conveyor.claim"))  # fmt: skip
