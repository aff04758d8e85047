"""The blocking client against a real server and worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from conveyor.client import (
    Client,
    Conflict,
    ConnectionFailed,
    JobEvent,
    JobSpec,
    NotFound,
    Progress,
    RateLimited,
    RetryPolicy,
    Tokens,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
    chain,
    step,
)
from conveyor.domain.states import JobState
from tests.api.conftest import api_settings
from tests.client.conftest import Counting, Login, Proxy
from tests.support.live import PASSWORD, LiveServer, live_server

LATER = 3600.0  # a delay that keeps a job scheduled for the whole test


def signed_in(server: LiveServer, who: Login, **options: object) -> Client:
    client = Client(server.url, **options)  # type: ignore[arg-type]
    client.login(who.email, who.password)
    return client


def test_submit_get_list_cancel_retry_result_delete(server: LiveServer, ada: Login) -> None:
    with signed_in(server, ada) as c:
        parked = [c.submit("sleep", {"seconds": 0}, delay=LATER, tags=[f"n{i}"]) for i in range(7)]
        assert {j.state for j in parked} == {JobState.SCHEDULED}
        assert c.get(parked[0].id) == parked[0]

        listed = list(c.list(page_size=3))  # three pages
        assert [j.id for j in listed] == [j.id for j in reversed(parked)]
        assert [j.id for j in c.list(tag="n2")] == [parked[2].id]
        assert len(list(c.list(page_size=2, limit=5))) == 5
        assert list(c.list(state="completed")) == []

        cancelled = c.cancel(parked[0].id)
        assert cancelled.state is JobState.CANCELLED
        assert c.retry(parked[0].id).state is JobState.QUEUED  # queued now, not in an hour
        with pytest.raises(Conflict) as caught:
            c.result(parked[1].id)
        assert caught.value.code == "conflict" and caught.value.status == 409

        done = c.wait(parked[0].id, timeout=20)
        assert done.state is JobState.COMPLETED
        assert c.result(done.id).result == {"slept": 0.0, "attempt": 1}
        c.delete(done.id)
        with pytest.raises(NotFound):
            c.get(done.id)


def test_submit_many_is_one_request_and_keys_dedupe(server: LiveServer, ada: Login) -> None:
    with signed_in(server, ada) as c:
        specs = [JobSpec(type="noop", idempotency_key=f"k{i}") for i in range(5)]
        first = c.submit_many(specs)
        again = c.submit_many([{"type": "noop", "idempotency_key": "k0"}])
        assert len(first) == 5 and again[0].id == first[0].id
        single = c.submit("noop", idempotency_key="one")
        assert c.submit("noop", idempotency_key="one").id == single.id


def test_wait_reports_progress_and_returns_the_finished_job(server: LiveServer, ada: Login) -> None:
    with signed_in(server, ada) as c:
        job = c.submit("sleep", {"seconds": 0.5, "steps": 5})
        seen: list[Progress] = []
        events: list[JobEvent] = []
        done = c.wait(job.id, timeout=20, on_progress=seen.append, on_event=events.append)
        assert done.state is JobState.COMPLETED and done.result == {"slept": 0.5, "attempt": 1}
        percents = [p.percent for p in seen]  # the worker may coalesce quick reports
        assert percents == sorted(set(percents)) and percents[-1] == 100
        assert set(percents) <= {20, 40, 60, 80, 100}
        assert seen[-1].message == "step 5/5"
        assert events[-1].type == "completed"
        assert c.wait(job.id) == done  # already finished: answered at once

        failing = c.submit("sleep", {"seconds": 0, "fail": True, "permanent": True})
        failed = c.wait(failing.id, timeout=20)
        assert failed.state is JobState.FAILED and failed.errors[-1].type

        slow = c.submit("sleep", {"seconds": 30})
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            c.wait(slow.id, timeout=0.5)
        assert time.monotonic() - started < 5
        c.cancel(slow.id)


def test_wait_resumes_after_the_connection_drops(
    server: LiveServer, ada: Login, proxy: Proxy
) -> None:
    with Client(proxy.url) as c:
        c.login(ada.email, ada.password)
        job = c.submit("sleep", {"seconds": 1.0, "steps": 5})
        events: list[JobEvent] = []

        cuts: list[int] = []

        def cut_once(progress: Progress) -> None:
            if not cuts:  # at the first report (quick ones may be coalesced: not always 20%)
                cuts.append(progress.percent)
                proxy.drop()  # the stream breaks in the middle of the job

        done = c.wait(job.id, timeout=30, on_progress=cut_once, on_event=events.append)
        assert done.state is JobState.COMPLETED
        assert cuts and proxy.accepted >= 2  # a new connection after the cut
        whole = list(c.watch(job.id, timeout=10))  # the story from the start, uncut
        assert [e.event_id for e in events] == [e.event_id for e in whole]  # no gap, no repeat
        assert [e.type for e in whole][:2] == ["created", "started"]
        assert whole[-1].type == "completed"


def test_errors_are_typed_and_carry_the_code(server: LiveServer, ada: Login) -> None:
    server.user("bob@example.com")
    with signed_in(server, ada) as c, signed_in(server, Login("bob@example.com")) as bob:
        job = c.submit("sleep", {"seconds": 0}, delay=LATER)
        with pytest.raises(NotFound) as other:
            bob.get(job.id)  # another user's job does not exist for bob
        assert other.value.code == "not_found" and other.value.status == 404

        with pytest.raises(ValidationFailed) as bad_payload:
            c.submit("sleep", {"seconds": -1})
        assert [e.loc for e in bad_payload.value.field_errors] == [("seconds",)]
        assert "seconds" in str(bad_payload.value)

        with pytest.raises(ValidationFailed) as bad_field:
            c.submit("sleep", priority=5000)
        assert bad_field.value.code == "validation_error"
        assert [e.loc for e in bad_field.value.field_errors] == [("body", "priority")]

        with pytest.raises(ValidationFailed) as unknown:
            c.submit("no-such-type")
        assert unknown.value.code == "unknown_job_type"

    with Client(server.url, api_key="cvk_not-a-real-key") as stranger:
        with pytest.raises(Unauthorized) as denied:
            stranger.get(job.id)
        assert denied.value.status == 401
    with Client(server.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.login(ada.email, "wrong password")


def test_api_key_types_stats_and_progress(server: LiveServer) -> None:
    key = server.api_key(server.user("key@example.com"))
    with Client(server.url, api_key=key) as c:
        job = c.submit("sleep", {"seconds": 0, "steps": 2})
        assert c.wait(job.id, timeout=20).state is JobState.COMPLETED
        assert c.progress(job.id) == Progress(percent=100, message="step 2/2")
        sleep = next(t for t in c.job_types() if t.name == "sleep")
        assert "seconds" in sleep.payload_schema["properties"]
        assert c.stats()["totals"]["completed"] == 1


def test_logout_ends_the_login_on_the_server(server: LiveServer, ada: Login) -> None:
    issued: list[Tokens] = []
    with signed_in(server, ada, on_tokens=issued.append) as c:
        c.logout()
        with pytest.raises(Unauthorized):
            c.get("any")  # no credentials left
    old = Client(server.url, token="expired", refresh_token=issued[0].refresh_token)
    with old, pytest.raises(Unauthorized):
        old.get("any")  # the refresh token was revoked


def test_an_expired_access_token_is_refreshed_once(server: LiveServer, ada: Login) -> None:
    # No setting for these: a 3 s login (2 to 3 s, as exp has whole seconds), no leeway.
    tokens = server.engine.accounts.tokens
    tokens.access_ttl, tokens.leeway = timedelta(seconds=3), timedelta(0)
    renewed: list[Tokens] = []
    with signed_in(server, ada, on_tokens=renewed.append) as c:
        job = c.submit("noop")
        time.sleep(4.1)  # the access token has expired (exp has whole seconds)
        assert c.get(job.id).id == job.id
        assert len(renewed) == 2  # the login, then one refresh
        assert renewed[1].refresh_token != renewed[0].refresh_token
    # The first refresh token was used up by the rotation: it no longer works.
    old = Client(server.url, token="expired", refresh_token=renewed[0].refresh_token)
    with old, pytest.raises(Unauthorized):
        old.get(job.id)


def test_connection_errors_are_retried_for_idempotent_calls_only() -> None:
    with socket_that_refuses() as url:
        policy = RetryPolicy(attempts=3, backoff=0.01)
        counting = Counting()
        with Client(url, api_key="cvk_x", retry=policy, transport=counting) as c:
            with pytest.raises(ConnectionFailed) as down:
                c.get("some-id")
            assert f"cannot reach {url}" in str(down.value)
            assert counting.sent == ["GET /api/v1/jobs/some-id"] * 3
            counting.sent.clear()
            with pytest.raises(ConnectionFailed):
                c.submit("noop")
            assert counting.sent == ["POST /api/v1/jobs"]  # never twice without a key
            counting.sent.clear()
            with pytest.raises(ConnectionFailed):
                c.submit("noop", idempotency_key="k")
            assert counting.sent == ["POST /api/v1/jobs"] * 3


def test_schedules(server: LiveServer, ada: Login) -> None:
    with signed_in(server, ada) as c:
        made = c.create_schedule("nightly", "0 3 * * *", "noop", timezone="Europe/Paris")
        assert made.type == "noop" and not made.paused and made.next_fire_at
        assert [s.id for s in c.list_schedules()] == [made.id]
        assert c.pause_schedule(made.id).paused
        assert not c.resume_schedule(made.id).paused
        assert c.update_schedule(made.id, cron="*/5 * * * *").cron == "*/5 * * * *"
        assert c.get_schedule(made.id).cron == "*/5 * * * *"
        with pytest.raises(ValidationFailed):
            c.create_schedule("bad", "not cron", "noop")
        c.delete_schedule(made.id)
        with pytest.raises(NotFound):
            c.get_schedule(made.id)


def test_a_schedule_of_a_workflow_template(server: LiveServer, ada: Login) -> None:
    template = chain("nightly", [step("a", "noop"), step("b", "noop")])
    with signed_in(server, ada) as c:
        made = c.create_workflow_schedule("nightly", "0 3 * * *", template)
        assert made.type is None and made.workflow is not None
        assert [s["name"] for s in made.workflow["steps"]] == ["a", "b"]
        assert c.get_schedule(made.id).workflow == made.workflow
        with pytest.raises(ValidationFailed):
            c.create_workflow_schedule("bad", "0 3 * * *", chain("x", [step("a", "nope")]))


def test_a_workflow_schedule_s_template_is_replaced(server: LiveServer, ada: Login) -> None:
    with signed_in(server, ada) as c:
        made = c.create_workflow_schedule("nightly", "0 3 * * *", chain("n", [step("a", "noop")]))
        changed = c.update_schedule(made.id, workflow=chain("r", [step("x", "noop"),
                                                                   step("y", "noop")]))  # fmt: skip
        assert changed.workflow is not None and changed.workflow["name"] == "r"
        assert [s["name"] for s in changed.workflow["steps"]] == ["x", "y"]
        with pytest.raises(ValidationFailed) as bad:
            c.update_schedule(made.id, workflow=chain("b", [step("a", "noop"), step("b", "nope")]))
        assert "steps.1.type" in str(bad.value)
        assert c.get_schedule(made.id).workflow == changed.workflow  # unchanged


@contextmanager
def socket_that_refuses() -> Iterator[str]:
    """A loopback URL nothing listens on (a port taken, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def test_rate_limited_says_when_to_come_back(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(db_url, tmp_path, rate_limit_auth="2/minute")
    with live_server(settings) as limited, Client(limited.url) as c:
        limited.user("ada@example.com")
        for _ in range(2):
            c.login("ada@example.com", PASSWORD)
        with pytest.raises(RateLimited) as caught:
            c.login("ada@example.com", PASSWORD)
        assert caught.value.code == "rate_limited" and caught.value.status == 429
        assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60
