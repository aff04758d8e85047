"""Unique jobs across processes: two real `conveyor api` processes on one database, each sent
the same unique job several times at once, round after round. Every round stores exactly
one job: one answer is 201, every other is 200 with `duplicate` true and the same id (the
partial unique index decides, not a check-then-insert in either process)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import HANDLERS, Cluster, eventually
from tests.support.unique_handlers import MODULE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADMIN = ("admin@example.com", "admin-password-123")
STARTUP = 40.0  # seconds for two processes to start on a busy 2-core machine
ROUNDS = 25
EACH = 3  # requests per API per round, all in flight at once


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def settings(tmp_path: Path) -> dict[str, str]:
    return {
        "secret_key": "unique-jobs-test-secret-key-long-enough-for-hs256",
        "admin_email": ADMIN[0],
        "admin_password": ADMIN[1],
        "mail_url": f"file://{tmp_path / 'mail'}",
        "data_dir": str(tmp_path / "data"),
        "handler_modules": f"{HANDLERS},{MODULE}",
        "rate_limit_submit": "100000/minute",
        "rate_limit_auth": "1000/minute",
        "db_request_timeout": "60",
    }


@pytest.fixture
async def apis(cluster: Cluster, tmp_path: Path) -> AsyncIterator[list[httpx.AsyncClient]]:
    env = settings(tmp_path)
    ports = [free_port(), free_port()]
    for n, port in enumerate(ports, 1):
        cluster.spawn(f"api-{n}", ["api", "--port", str(port)], env)
    clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=60) for p in ports]
    try:

        async def ready() -> bool:
            for client in clients:
                try:
                    if (await client.get("/ready")).status_code != 200:
                        return False
                except httpx.TransportError:
                    return False
            return True

        await eventually(ready, timeout=STARTUP, what="both APIs to be ready", every=0.2)
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def test_two_api_processes_store_one_job_per_unique_key(
    apis: list[httpx.AsyncClient],
) -> None:
    r = await apis[0].post("/api/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    ids = set()
    for n in range(ROUNDS):
        body = {"type": "unique_order", "payload": {"order_id": f"round-{n}"}}
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/jobs", json=body, headers=headers)
                for _ in range(EACH)
                for client in apis
            )
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] * (2 * EACH - 1) + [201], [a.text for a in answers]
        jobs = [a.json() for a in answers]
        assert len({job["id"] for job in jobs}) == 1, jobs
        assert sorted(job["duplicate"] for job in jobs) == [False] + [True] * (2 * EACH - 1)
        ids.add(jobs[0]["id"])

    # Batches naming the same keys in opposite orders, one per API at once: each key
    # stored once, and neither waits for the other for ever (keys are inserted in order).
    for n in range(ROUNDS):
        keys = [f"batch-{n}-{k}" for k in range(4)]
        bodies = [
            {"jobs": [{"type": "unique_order", "payload": {"order_id": k}} for k in order]}
            for order in (keys, keys[::-1])
        ]
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/jobs/batch", json=body, headers=headers)
                for client, body in zip(apis, bodies, strict=True)
            )
        )
        assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
        first, second = (a.json() for a in answers)
        assert [j["id"] for j in first] == [j["id"] for j in second[::-1]]
        fresh = [j for j in first + second if not j["duplicate"]]
        assert len(fresh) == len(keys)
        ids.update(j["id"] for j in first)

    listed = await apis[1].get(
        "/api/v1/jobs", params={"type": "unique_order", "limit": 1000}, headers=headers
    )
    assert listed.status_code == 200, listed.text
    stored = listed.json()["items"]
    assert len(stored) == 5 * ROUNDS
    assert {job["id"] for job in stored} == ids
