"""`email`: through a real SMTP server on loopback (aiosmtpd); sent at most once per job; an
SMTP outage makes the job retry, not vanish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conveyor.domain.jobs import JobRecord
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput
from conveyor.handlers.email import EmailPayload, send_email
from conveyor.runtime import Engine
from conveyor.services.jobs import Submission
from conveyor.worker.context import JobContext, JobInfo
from conveyor.worker.resources import Resources
from tests.handlers.conftest import open_engine, run_job
from tests.net.world import free_port

PAYLOAD = {"to": "recipient@example.com", "subject": "Hello", "text": "Hi there,\nit works."}
FAST: dict[str, Any] = {"poll_interval": 0.05}


@dataclass
class Inbox:
    """What the SMTP server was handed: envelope recipients and parsed messages."""

    recipients: list[list[str]] = field(default_factory=list)
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.recipients.append(list(envelope.rcpt_tos))
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox


def start_smtp(port: int) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    port = free_port()
    controller, inbox = start_smtp(port)
    try:
        yield SmtpServer(port, inbox)
    finally:
        controller.stop()


def context_for(engine: Engine, job: JobRecord) -> JobContext:
    """The context a worker would give a new attempt of `job`."""

    async def sink(job_id: str, attempt: int, percent: int, message: str | None) -> bool:
        return True

    info = JobInfo(
        id=job.id,
        type=job.type,
        queue=job.queue,
        attempt=job.attempt + 1,
        max_attempts=job.max_attempts,
        owner_id=job.owner_id,
        idempotency_key=job.idempotency_key or job.id,
    )
    resources = Resources(settings=engine.settings, backend=engine.backend, mail=engine.mail)
    return JobContext(info, sink, asyncio.get_running_loop(), resources)


async def test_the_message_arrives_and_is_sent_once(
    db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    mail_url = f"smtp://127.0.0.1:{smtp.port}"
    async with open_engine(db_url, tmp_path, mail_url=mail_url, **FAST) as engine:
        job = await run_job(engine, Submission(type="email", payload=PAYLOAD))
        assert job.state is JobState.COMPLETED, job.errors
        assert job.queue == "mail"

        (message,) = smtp.inbox.messages
        assert smtp.inbox.recipients == [["recipient@example.com"]]
        assert message["To"] == "recipient@example.com"
        assert message["Subject"] == "Hello"
        body = message.get_body(("plain",))
        assert body is not None
        assert body.get_content().strip().splitlines() == ["Hi there,", "it works."]
        assert message["Message-ID"] == job.result["message_id"]
        assert job.result["already_sent"] is False

        # A second run of the same job (a retry after a crash that lost the acknowledgement)
        # finds the recorded send and does not send again.
        again = await send_email(context_for(engine, job), EmailPayload.model_validate(PAYLOAD))
        assert again.already_sent is True
        assert again.message_id == job.result["message_id"]
        assert len(smtp.inbox.messages) == 1

        # Another job with the same payload is another message.
        other = await run_job(engine, Submission(type="email", payload=PAYLOAD))
        assert other.state is JobState.COMPLETED
        assert len(smtp.inbox.messages) == 2


async def test_an_smtp_outage_retries_the_job(db_url: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    mail_url = f"smtp://127.0.0.1:{port}?timeout=2"
    async with open_engine(db_url, tmp_path, mail_url=mail_url, **FAST) as engine:
        enqueued = await engine.jobs.submit(Submission(type="email", payload=PAYLOAD))
        worker = engine.worker("mail", concurrency=2)
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 10
            while (job := await engine.jobs.get(enqueued.id)).state is not JobState.RETRYING:
                assert job.state not in (JobState.FAILED, JobState.COMPLETED), job
                assert time.monotonic() < deadline, f"still {job.state}"
                await asyncio.sleep(0.02)
            assert job.attempt == 1 and job.max_attempts == 5
            (error,) = job.errors
            assert error["type"] == "MailDeliveryError"
            assert f"127.0.0.1:{port} did not take the mail" in error["message"]
            assert job.run_at > datetime.now(UTC)  # backed off, not dropped
            assert job.finished_at is None and job.result is None

            # The server comes back; the retry (brought forward) delivers the message.
            controller, inbox = start_smtp(port)
            try:
                await engine.jobs.set_state(enqueued.id, JobState.QUEUED)
                deadline = time.monotonic() + 10
                while (job := await engine.jobs.get(enqueued.id)).state is not JobState.COMPLETED:
                    assert job.state in (JobState.QUEUED, JobState.RUNNING), job
                    assert time.monotonic() < deadline, f"still {job.state}"
                    await asyncio.sleep(0.02)
                assert job.attempt == 2
                (message,) = inbox.messages
                assert message["Subject"] == "Hello"
            finally:
                controller.stop()
        finally:
            worker.stop(force=True)
            await task


async def test_a_multiline_subject_is_refused_at_submission(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path, **FAST) as engine:
        payload = {**PAYLOAD, "subject": "Hello\r\nBcc: everyone@example.com"}
        with pytest.raises(InvalidInput):
            await engine.jobs.submit(Submission(type="email", payload=payload))
