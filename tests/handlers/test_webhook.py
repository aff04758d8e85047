"""`webhook`: signed JSON POSTs to a loopback receiver; what is retried and what is not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.domain.states import JobState
from conveyor.handlers.webhook import WebhookPayload, encode, sign, verify
from conveyor.services.jobs import Submission
from tests.handlers.conftest import open_engine, run_job
from tests.net.world import LoopbackServer, Seen, free_port, respond

SECRET = "a-receiver-secret-of-some-length"


class Receiver:
    """Answers the given statuses in turn, then 200; a 3xx points back at itself."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    async def __call__(self, seen: Seen, writer: asyncio.StreamWriter) -> None:
        status = self.statuses.pop(0) if self.statuses else 200
        headers = [("Location", "/elsewhere")] if 300 <= status < 400 else []
        await respond(writer, status, b"thanks", headers)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, LoopbackServer]]:
    app = Receiver()
    server = await LoopbackServer(app).start()
    yield app, server
    await server.stop()


def hook(server: LoopbackServer, **fields: Any) -> Submission:
    payload = {"url": f"http://127.0.0.1:{server.port}/hook", "body": {"ok": True}, **fields}
    return Submission(type="webhook", payload=payload)


# ---- signatures and payloads -----------------------------------------------------------------


def test_a_signature_verifies_only_for_its_secret_body_and_time() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify("another-secret-entirely", header, body, now=1_700_000_100)
    assert not verify(SECRET, header, b'{"a":2}', now=1_700_000_100)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)  # a replay, too late
    assert not verify(SECRET, "v1=abc", body) and not verify(SECRET, "garbage", body)


def test_the_body_is_compact_utf8_json() -> None:
    assert encode({"name": "Zoë", "n": [1, 2]}) == '{"name":"Zoë","n":[1,2]}'.encode()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"headers": {"Host": "evil.test"}}, "set by Conveyor: Host"),
        ({"headers": {"content-length": "1"}}, "set by Conveyor: content-length"),
        ({"headers": {"X-Conveyor-Signature": "t=1,v1=0"}}, "set by Conveyor"),
        ({"headers": {"Bad Name": "x"}}, "pattern"),
        ({"headers": {"X-Ok": "a\r\nInjected: yes"}}, "pattern"),
        ({"secret": "short"}, "at least 16"),
        ({"url": "ftp://example.com/hook"}, "only http and https"),
        ({"url": "http://user:pw@example.com/hook"}, "credentials"),
    ],
)
def test_the_payload_refuses_what_it_cannot_send(fields: dict[str, Any], problem: str) -> None:
    payload = {"url": "https://example.com/hook", "body": None, **fields}
    with pytest.raises(ValidationError, match=problem):
        WebhookPayload.model_validate(payload)


# ---- deliveries through a worker, on both databases ------------------------------------------


async def test_a_signed_delivery_is_verified_by_the_receiver(
    db_url: str, tmp_path: Path, receiver: tuple[Receiver, LoopbackServer]
) -> None:
    _, server = receiver
    body = {"event": "visit.done", "stores": ["RP00001"], "note": "café"}
    submission = hook(server, body=body, secret=SECRET, headers={"X-Tenant": "t1"})
    async with open_engine(db_url, tmp_path, allow_private_urls=True) as engine:
        job = await run_job(engine, submission)
    assert job.state is JobState.COMPLETED, job.errors
    assert job.result == {"status": 200, "attempt": 1}
    (seen,) = server.seen
    assert seen.method == "POST" and seen.path == "/hook"
    assert json.loads(seen.body) == body
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-tenant"] == "t1"
    assert seen.headers["x-conveyor-job"] == job.id
    assert seen.headers["x-conveyor-attempt"] == "1"
    assert verify(SECRET, seen.headers["x-conveyor-signature"], seen.body)


async def test_a_5xx_is_retried_and_then_delivered(
    db_url: str, tmp_path: Path, receiver: tuple[Receiver, LoopbackServer]
) -> None:
    app, server = receiver
    app.statuses = [500]
    async with open_engine(db_url, tmp_path, allow_private_urls=True) as engine:
        job = await run_job(engine, hook(server))
    assert job.state is JobState.COMPLETED
    assert job.result == {"status": 200, "attempt": 2}
    assert [e["type"] for e in job.errors] == ["DeliveryFailed"]
    assert "the receiver answered 500" in job.errors[0]["message"]
    assert [s.headers["x-conveyor-attempt"] for s in server.seen] == ["1", "2"]
    assert len({s.headers["x-conveyor-job"] for s in server.seen}) == 1
    assert "x-conveyor-signature" not in server.seen[0].headers  # no secret, no signature


@pytest.mark.parametrize(("status", "error"), [(404, "answered 404"), (302, "a redirect")])
async def test_a_4xx_or_a_redirect_fails_without_a_retry(
    db_url: str,
    tmp_path: Path,
    receiver: tuple[Receiver, LoopbackServer],
    status: int,
    error: str,
) -> None:
    app, server = receiver
    app.statuses = [status]
    async with open_engine(db_url, tmp_path, allow_private_urls=True) as engine:
        job = await run_job(engine, hook(server))
    assert job.state is JobState.FAILED and job.attempt == 1
    (entry,) = job.errors
    assert entry["type"] == "DeliveryRefused" and error in entry["message"]
    assert len(server.seen) == 1  # the redirect was not followed


async def test_a_network_error_is_retryable(db_url: str, tmp_path: Path) -> None:
    """One attempt allowed, so the retryable error ends the job at once: its type says why."""
    payload = {"url": f"http://127.0.0.1:{free_port()}/hook", "body": 1}
    submission = Submission(type="webhook", payload=payload, max_attempts=1)
    async with open_engine(db_url, tmp_path, allow_private_urls=True) as engine:
        job = await run_job(engine, submission)
    assert job.state is JobState.FAILED
    assert [e["type"] for e in job.errors] == ["DeliveryFailed"]


async def test_a_private_address_is_refused_without_the_setting(
    db_url: str, tmp_path: Path, receiver: tuple[Receiver, LoopbackServer]
) -> None:
    _, server = receiver
    submission = Submission(type="webhook", payload={"url": "http://127.0.0.1/hook", "body": 1})
    async with open_engine(db_url, tmp_path) as engine:
        job = await run_job(engine, submission)
    assert job.state is JobState.FAILED and job.attempt == 1
    (entry,) = job.errors
    assert entry["type"] == "BlockedUrl" and entry["message"].endswith("127.0.0.1 is loopback")
    assert server.seen == []
