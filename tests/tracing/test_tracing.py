"""conveyor/tracing.py: off unless asked for, a stored context continued, and nothing
breaks when opentelemetry is not there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor import tracing
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, NewJob
from conveyor.worker import spans as worker_spans
from tests.support.processes import CHILD_PYTHONPATH, ROOT, clean_environ


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_asked_for(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert tracing.wanted(environ) == exporters


def test_without_configuration_nothing_is_traced_or_stored() -> None:
    assert not tracing.configure("conveyor-test", environ={})
    assert not tracing.enabled()
    with tracing.span("request") as span:
        assert span is tracing.NO_SPAN
        assert NewJob(type="noop", payload={}).trace_context is None
    assert tracing.current_context() is None


def test_a_job_made_under_a_span_stores_it_and_its_run_continues_it(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("submit"):
        job = NewJob(type="noop", payload={})
    claimed = ClaimedJob(job.id, "noop", "default", {}, 1, 3, None, 0, "system", None,
                         trace_context=job.trace_context)  # fmt: skip
    with worker_spans.run(claimed):
        pass
    submit, run = spans.get_finished_spans()
    assert run.name == "conveyor.run noop"
    assert run.context is not None and submit.context is not None
    assert run.context.trace_id == submit.context.trace_id
    assert run.parent is not None and run.parent.span_id == submit.context.span_id
    assert run.attributes is not None and run.attributes["messaging.message.id"] == job.id


def test_a_retry_links_to_its_first_attempt_and_an_untraced_job_gets_its_own_trace(
    spans: InMemorySpanExporter,
) -> None:
    job = NewJob(type="noop", payload={})  # no span current: nothing stored
    assert job.trace_context is None
    for attempt in (1, 2):
        claimed = ClaimedJob(job.id, "noop", "default", {}, attempt, 3, None, 0, "system", None,
                             run_at=utcnow())  # fmt: skip
        worker_spans.waited(claimed)
        with worker_spans.run(claimed):
            pass
    wait, first, _, second = spans.get_finished_spans()
    assert wait.name == "conveyor.wait" and wait.context is not None
    assert first.context is not None and second.context is not None
    assert wait.context.trace_id == first.context.trace_id
    assert first.parent is None and second.parent is None  # roots, of one trace: the job's
    assert second.context.trace_id == first.context.trace_id
    (link,) = second.links
    assert link.context.span_id == first.context.span_id


def _python(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**clean_environ(), "PYTHONPATH": CHILD_PYTHONPATH, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_without_opentelemetry_a_worker_still_runs_jobs(tmp_path: Path) -> None:
    """opentelemetry made unimportable, tracing asked for: a warning, and jobs still run."""
    script = f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if not installed
        import asyncio
        from conveyor import tracing
        from conveyor.domain.jobs import NewJob
        from conveyor.runtime import load_handlers
        from conveyor.store.factory import open_backend
        from conveyor.store.migrate import migrate
        from conveyor.worker.worker import Worker, WorkerConfig

        async def main() -> None:
            assert not tracing.configure("conveyor-worker")
            backend = open_backend("sqlite:///{tmp_path / "conveyor.db"}")
            await migrate(backend.db)
            (job,) = await backend.enqueue([NewJob(type="noop", payload={{}})])
            config = WorkerConfig(queues={{"default": None}}, poll_interval=0.1, burst=True)
            assert await Worker(backend, load_handlers([]), config).run() == 0
            print((await backend.get(job.id)).state.value)
            await backend.close()

        asyncio.run(main())
    """
    done = _python(script, tmp_path, OTEL_TRACES_EXPORTER="otlp")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "completed"
    assert "opentelemetry is not installed" in done.stderr


def test_a_request_s_traceparent_and_tracestate_are_what_its_jobs_store(
    spans: InMemorySpanExporter,
) -> None:
    caller = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
        "tracestate": "vendor=opaque",
    }
    with tracing.span("request", kind="server", headers=caller):
        first, second = NewJob(type="noop", payload={}), NewJob(type="noop", payload={})
    (request,) = spans.get_finished_spans()
    assert request.context is not None
    assert first.trace_context == second.trace_context
    stored = json.loads(first.trace_context or "{}")
    assert stored["traceparent"].split("-")[1:3] == [
        "0af7651916cd43dd8448eb211c80319c",
        f"{request.context.span_id:016x}",
    ]
    assert stored["tracestate"] == "vendor=opaque"


def test_a_claim_that_took_nothing_makes_no_span(spans: InMemorySpanExporter) -> None:
    for count in (0, 2):
        worker_spans.claimed(worker_spans.claim_began(), ["default"], 4, count)
    (claim,) = spans.get_finished_spans()
    assert claim.name == "conveyor.claim" and claim.attributes is not None
    assert claim.attributes["messaging.batch.message_count"] == 2


@pytest.mark.slow
def test_an_app_made_by_uvicorn_s_factory_traces_as_the_commands_do(tmp_path: Path) -> None:
    """`uvicorn conveyor.server:create_app --factory` runs no `conveyor` command: the app
    itself reads the OTEL_* variables (it traced nothing before)."""
    script = f"""
        from conveyor import tracing
        from conveyor.server import create_app
        from conveyor.settings import Settings

        assert not tracing.enabled()
        create_app(Settings(database_url="sqlite:///{tmp_path / "conveyor.db"}"))
        print(tracing.enabled())
    """
    done = _python(script, tmp_path, OTEL_TRACES_EXPORTER="console")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"
    off = _python(script, tmp_path)
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip().splitlines()[-1] == "False"
