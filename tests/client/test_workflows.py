"""`client.workflows` (sync and async) against a live server and worker, on both databases:
builders, submit, wait, watch, list, cancel, retry, delete, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.client import (
    AsyncClient,
    Client,
    Conflict,
    NotFound,
    ValidationFailed,
    chain,
    chord,
    step,
    workflow,
)
from tests.api.conftest import api_settings
from tests.client.conftest import Login
from tests.support.live import LiveServer, live_server
from tests.support.workflow_door_handlers import MODULE

TIMEOUT = 60.0


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = api_settings(db_url, tmp_path, handler_modules=MODULE, poll_interval=0.1)
    with live_server(settings) as s:
        yield s


def signed_in(server: LiveServer, who: Login) -> Client:
    client = Client(server.url)
    client.login(who.email, who.password)
    return client


def test_a_chord_runs_and_the_client_waits_for_it_and_watches_it(
    server: LiveServer, ada: Login
) -> None:
    spec = chord(
        "report", [step(f"part-{i}", "wf_ok", {"i": i}) for i in range(3)], step("merge", "wf_ok")
    )
    with signed_in(server, ada) as c:
        submitted = c.workflows.submit(spec, idempotency_key="report-1")
        assert submitted.state == "running" and submitted.step_count == 4
        assert submitted.step("merge").depends_on == ["part-0", "part-1", "part-2"]
        assert {(e.from_, e.to) for e in submitted.edges} == {
            (f"part-{i}", "merge") for i in range(3)
        }
        done = c.workflows.wait(submitted.id, timeout=TIMEOUT)
        assert done.finished and done.state == "completed"
        assert done.results["part-2"] == {"got": {"i": 2}}
        assert set(done.results) == {"part-0", "part-1", "part-2", "merge"}
        # the same key answers the same workflow
        assert c.workflows.submit(spec, idempotency_key="report-1").id == submitted.id

        events = list(c.workflows.watch(submitted.id, timeout=TIMEOUT))
        assert events[-1].type == "workflow" and events[-1].job.id == submitted.id
        assert events[-1].job.state.value == "completed"
        finished = {e.job.id for e in events if e.type == "completed"}
        assert finished == {s.job_id for s in done.steps}

        listed = list(c.workflows.list(page_size=1))
        assert [w.id for w in listed] == [submitted.id]
        assert list(c.workflows.list(state="failed")) == []
        c.workflows.delete(submitted.id)
        with pytest.raises(NotFound):
            c.workflows.get(submitted.id)


def test_errors_cancel_and_retry(server: LiveServer, ada: Login) -> None:
    server.user("bob@example.com")
    with signed_in(server, ada) as c:
        cyclic = workflow(
            "loop", [step("a", "wf_ok", depends_on=["b"]), step("b", "wf_ok", depends_on=["a"])]
        )
        with pytest.raises(ValidationFailed) as caught:
            c.workflows.submit(cyclic)
        assert "cycle" in str(caught.value)
        assert list(c.workflows.list()) == []

        broken = c.workflows.submit(chain("broken", [step("a", "wf_fail"), step("b", "wf_ok")]))
        failed = c.workflows.wait(broken.id, timeout=TIMEOUT)
        assert failed.state == "failed"
        error = failed.step("a").error
        assert error is not None and error.message == "this step always fails"
        assert failed.step("b").state.value == "cancelled"
        retried = c.workflows.retry(broken.id)
        assert retried.state == "running"
        assert c.workflows.wait(broken.id, timeout=TIMEOUT).state == "failed"  # it fails again

        with Client(server.url) as bob:
            bob.login("bob@example.com", ada.password)
            with pytest.raises(NotFound):
                bob.workflows.get(broken.id)
            with pytest.raises(NotFound):
                bob.workflows.cancel(broken.id)

        slow = step("a", "sleep", {"seconds": 120})  # running or queued while we cancel
        parked = c.workflows.submit(
            workflow("parked", [slow, step("b", "wf_ok", depends_on=["a"])])
        )
        with pytest.raises(Conflict):
            c.workflows.delete(parked.id)  # still running
        cancelled = c.workflows.cancel(parked.id)
        assert cancelled.state == "cancelled"
        assert {s.state.value for s in cancelled.steps} == {"cancelled"}


async def test_the_async_client_does_the_same(server: LiveServer, ada: Login) -> None:
    async with AsyncClient(server.url) as c:
        await c.login(ada.email, ada.password)
        spec = chain("two", [step("a", "wf_ok", {"n": 1}), step("b", "wf_ok")])
        submitted = await c.workflows.submit(spec)
        done = await c.workflows.wait(submitted.id, timeout=TIMEOUT)
        assert done.state == "completed"
        assert done.results["a"] == {"got": {"n": 1}}
        told = [e async for e in c.workflows.watch(submitted.id, timeout=TIMEOUT)]
        assert told[-1].type == "workflow"
        assert [w.id async for w in c.workflows.list()] == [submitted.id]
        assert (await c.workflows.get(submitted.id)).id == submitted.id
        await c.workflows.delete(submitted.id)
        with pytest.raises(NotFound):
            await c.workflows.get(submitted.id)
