"""Account mail survives a crash: it is a job committed with the registration, not a task.

A real `conveyor api` registers a user with no worker running and is killed with SIGKILL
right after its 202; a worker started afterwards sends the verification code exactly once
(a second worker run sends nothing more), and a restarted API accepts that code. Mail is
written as .eml files (`MAIL_URL=file:///dir`) and read back as a person would.
"""

from __future__ import annotations

import email
import re
import socket
from collections.abc import AsyncIterator
from email.message import Message
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Cluster, Proc, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ADA = "ada@example.com"
PASSWORD = "correct horse battery"
STARTUP = 30.0  # seconds for a process to start on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def settings(tmp_path: Path) -> dict[str, str]:
    return {
        "secret_key": "account-mail-test-secret-key-long-enough-for-hs256",
        "admin_email": "admin@example.com",
        "admin_password": "admin-password-123",
        "mail_url": f"file://{tmp_path / 'mail'}",
        "data_dir": str(tmp_path / "data"),
        "argon2_time_cost": "1",
        "argon2_memory_kib": "1024",
    }


def mails_to(directory: Path, address: str) -> list[Message]:
    found = [email.message_from_bytes(p.read_bytes()) for p in sorted(directory.glob("*.eml"))]
    return [message for message in found if message["To"] == address]


def code_in(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes), message
    match = re.search(r"\b(\d{6})\b", body.decode())
    assert match, body
    return match.group(1)


async def started_api(cluster: Cluster, name: str, env: dict[str, str]) -> tuple[Proc, str]:
    port = free_port()
    proc = cluster.spawn(name, ["api", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            try:
                return (await client.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

    await eventually(ready, timeout=STARTUP, what=f"{name} to be ready", every=0.2)
    return proc, url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as opened:
        yield opened


async def test_a_registration_killed_after_its_answer_still_mails_the_code_once(
    cluster: Cluster, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    env = settings(tmp_path)
    mail = tmp_path / "mail"
    api, url = await started_api(cluster, "api-1", env)

    r = await client.post(f"{url}/api/v1/auth/register", json={"email": ADA, "password": PASSWORD})
    assert r.status_code == 202, r.text
    api.kill()  # SIGKILL: no shutdown, no background task gets to finish
    assert mails_to(mail, ADA) == []  # nothing sent: no worker ran yet

    for run in (1, 2):  # the second run finds nothing left to send
        worker = cluster.worker(f"worker-{run}", queues="mail", burst=True, settings=env)
        assert await worker.wait_exit(timeout=STARTUP) == 0, worker.output()
    (message,) = mails_to(mail, ADA)
    assert message["Subject"] == "Your Conveyor verification code"

    _, url = await started_api(cluster, "api-2", env)
    body = {"email": ADA, "code": code_in(message)}
    r = await client.post(f"{url}/api/v1/auth/verify", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["verified"] is True
