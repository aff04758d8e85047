"""`account_mail`: sealed codes, refused forgeries, one job per mail committed with its cause,
and at most one send per job, on each database with mail written as .eml files."""

from __future__ import annotations

import asyncio
import email
import json
import re
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from conveyor.domain.jobs import JobFilter, JobRecord
from conveyor.domain.states import JobState
from conveyor.handlers.account_mail import (
    ACCOUNT_MAIL,
    AccountLetters,
    AccountMailPayload,
    ForgedAccountMail,
    send_account_mail,
)
from conveyor.runtime import Engine
from conveyor.services.jobs import Submission
from tests.handlers.conftest import open_engine, run_job
from tests.handlers.test_email import context_for

ADA = "ada@example.com"
PASSWORD = "correct horse battery"
TTL = timedelta(minutes=10)


def mails(engine: Engine) -> list[Message]:
    directory = Path(engine.settings.mail_url.removeprefix("file://"))
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(directory.glob("*.eml"))]


def code_in(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(r"\b(\d{6})\b", body.decode())
    assert found is not None
    return found.group(1)


async def deliver(engine: Engine) -> None:
    await engine.worker("mail", concurrency=2, burst=True).run()


async def account_mail_jobs(engine: Engine) -> list[JobRecord]:
    return (await engine.jobs.page(JobFilter(type=ACCOUNT_MAIL), limit=100)).items


# ---- the payload (no database) ---------------------------------------------------------------
@pytest.mark.parametrize("code", ["000000", "123456", "999999"])
def test_a_sealed_code_opens_only_with_the_key(code: str) -> None:
    letters = AccountLetters("the secret key of this deployment, long enough")
    payload = letters.verification_code(ADA, code, TTL)
    again = letters.verification_code(ADA, code, TTL)

    assert payload["code"] != again["code"]  # a fresh nonce each time
    others = {name: value for name, value in payload.items() if name != "code"}
    assert code not in json.dumps(others)
    message = letters.message(AccountMailPayload.model_validate(payload))
    assert message.to == ADA and f"code is {code}" in message.text and "10 minutes" in message.text


def test_a_payload_the_key_did_not_sign_is_refused() -> None:
    letters = AccountLetters("the secret key of this deployment, long enough")
    taken = letters.address_taken(ADA)
    code = letters.verification_code(ADA, "123456", TTL)
    forged = [
        {**taken, "to": "eve@example.com"},
        {**taken, "kind": "verification_code", "code": code["code"], "minutes": 10},
        {**code, "minutes": 99},
        AccountLetters("another deployment's secret key, long enough").address_taken(ADA),
    ]
    for payload in forged:
        with pytest.raises(ForgedAccountMail):
            letters.message(AccountMailPayload.model_validate(payload))


# ---- through the service and a worker --------------------------------------------------------
async def test_the_code_is_queued_sealed_and_sent_once(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path) as engine:
        await engine.accounts.register(ADA, PASSWORD)
        (job,) = await account_mail_jobs(engine)
        assert job.state is JobState.QUEUED and job.queue == "mail" and mails(engine) == []

        await deliver(engine)
        (message,) = mails(engine)
        code = code_in(message)
        stored = await engine.jobs.get(job.id)
        assert stored.state is JobState.COMPLETED
        assert code not in json.dumps({k: v for k, v in stored.payload.items() if k != "code"})
        assert code not in json.dumps(stored.result)

        # A retry after a crash between the send and the acknowledgement sends nothing.
        again = await send_account_mail(context_for(engine, stored), job_payload(stored))
        assert again.already_sent and len(mails(engine)) == 1
        assert (await engine.accounts.verify_otp(ADA, code)).verified


def job_payload(job: JobRecord) -> AccountMailPayload:
    return AccountMailPayload.model_validate(job.payload)


async def test_a_taken_address_queues_a_notice_like_a_new_one(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path) as engine:
        await engine.accounts.register(ADA, PASSWORD)
        await engine.accounts.register(ADA.upper(), "another password")
        jobs = await account_mail_jobs(engine)
        assert len(jobs) == 2 and {job.type for job in jobs} == {ACCOUNT_MAIL}

        await deliver(engine)
        subjects = sorted(message["Subject"] for message in mails(engine))
        assert subjects == [
            "Someone tried to register with your e-mail address",
            "Your Conveyor verification code",
        ]


async def test_a_registration_whose_mail_cannot_be_queued_is_not_made(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_engine(db_url, tmp_path) as engine:

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the queue is unavailable")

        monkeypatch.setattr(engine.accounts.jobs, "submit", broken)
        with pytest.raises(RuntimeError):
            await engine.accounts.register(ADA, PASSWORD)
        monkeypatch.undo()

        assert await engine.accounts.store.find_by_email(ADA) is None
        await engine.accounts.register(ADA, PASSWORD)  # the address is still free
        assert len(await account_mail_jobs(engine)) == 1


async def test_the_same_mail_queued_twice_is_one_job(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path) as engine:
        letters = AccountLetters(engine.settings.resolved_secret_key())
        mail = Submission(
            type=ACCOUNT_MAIL, payload=letters.address_taken(ADA), idempotency_key="k-1"
        )
        first, second = [await engine.jobs.submit(mail) for _ in range(2)]
        assert first.id == second.id
        await deliver(engine)
        assert len(mails(engine)) == 1


async def test_account_mail_a_user_submits_sends_nothing(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path, poll_interval=0.05) as engine:
        forged = {"kind": "address_taken", "to": "victim@example.com", "seal": "0" * 64}
        job = await run_job(engine, Submission(type=ACCOUNT_MAIL, payload=forged))
        assert job.state is JobState.FAILED and job.attempt == 1, job.errors
        assert job.errors[-1]["type"] == "ForgedAccountMail"
        assert mails(engine) == []


async def test_two_services_share_one_sealing_key(db_url: str, tmp_path: Path) -> None:
    """An API and a worker started apart (two engines) agree on the key: the settings'."""
    async with open_engine(db_url, tmp_path) as api, open_engine(db_url, tmp_path) as worker:
        await api.accounts.register(ADA, PASSWORD)
        await asyncio.wait_for(deliver(worker), timeout=30)
        (message,) = mails(worker)
        assert (await api.accounts.verify_otp(ADA, code_in(message))).verified
