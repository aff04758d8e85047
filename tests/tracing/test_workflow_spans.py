"""A workflow's runs in one trace: each step's run is a child of the submitting request's
span, and a join (a step with several dependencies) links every parent's run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link

from tests.api.conftest import api_settings, running_api
from tests.support.processes import eventually

MODULE = "tests.support.trace_handlers"


def _ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


async def test_a_join_links_the_runs_of_all_its_parents(
    db_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    step = {"type": "trace_step", "payload": {}}
    declaration = {
        "name": "join",
        "steps": [
            {"name": "a", **step},
            {"name": "b", **step},
            {"name": "c", **step, "depends_on": ["a", "b"]},
        ],
    }
    settings = api_settings(db_url, tmp_path, handler_modules=MODULE, poll_interval=0.2)
    async with running_api(settings) as api:
        headers = await api.admin()
        r = await api.client.post("/api/v1/workflows", json=declaration, headers=headers)
        assert r.status_code == 201, r.text
        workflow = r.json()
        jobs = {s["name"]: s["job_id"] for s in workflow["steps"]}
        worker = api.engine.worker("default", concurrency=4)
        running = asyncio.create_task(worker.run())

        async def settled() -> bool:
            got = await api.client.get(f"/api/v1/workflows/{workflow['id']}", headers=headers)
            return bool(got.json()["state"] == "completed")

        try:
            await eventually(settled, timeout=60, what="the workflow to complete")
        finally:
            worker.stop()
            await running

    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "POST /api/v1/workflows"]
    runs = {
        s.attributes["conveyor.job.id"]: s
        for s in finished
        if s.name == "conveyor.run trace_step" and s.attributes is not None
    }
    a, b, c = (runs[jobs[name]] for name in "abc")
    for run in (a, b, c):
        assert run.parent is not None and run.parent.span_id == _ids(request)[1]
        assert _ids(run)[0] == _ids(request)[0]
    assert a.links == () and b.links == ()
    assert sorted(_ids_of(link) for link in c.links) == sorted([_ids(a), _ids(b)])


def _ids_of(link: Link) -> tuple[int, int]:
    return link.context.trace_id, link.context.span_id
