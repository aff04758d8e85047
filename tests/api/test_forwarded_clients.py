"""Whose X-Forwarded-For counts (issue 14, finding 4), on a real `conveyor api` socket.

uvicorn trusted the header from 127.0.0.1 by default, so a client on the same machine got a
new rate-limit bucket per request by sending a new address each time. Now only the peers in
CONVEYOR_TRUSTED_PROXIES (none by default) may say who the client is.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.test_account_mail import settings as api_env
from tests.acceptance.test_account_mail import started_api
from tests.support.processes import Cluster

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture
def sqlite_cluster(sqlite_template: Path, tmp_path: Path) -> Iterator[Cluster]:
    """Real processes on a fresh SQLite database: the finding is about sockets, not SQL."""
    database = tmp_path / "conveyor.db"
    shutil.copy(sqlite_template, database)
    cluster = Cluster(f"sqlite:///{database}", tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


async def failed_logins(url: str, forwarded_for: list[str]) -> list[int]:
    """One wrong sign-in per address, each sent with that X-Forwarded-For."""
    statuses = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for n, address in enumerate(forwarded_for):
            r = await client.post(
                "/api/v1/auth/login",
                json={"email": f"nobody{n}@example.com", "password": "wrong password"},
                headers={"X-Forwarded-For": address},
            )
            statuses.append(r.status_code)
    return statuses


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**api_env(tmp_path), "rate_limit_auth": "3/minute", **extra}


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    sqlite_cluster: Cluster, tmp_path: Path
) -> None:
    _, url = await started_api(sqlite_cluster, "api", env(tmp_path))
    spoofed = [f"203.0.113.{n}" for n in range(1, 7)]  # a new "client" every request
    assert await failed_logins(url, spoofed) == [401, 401, 401, 429, 429, 429]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    sqlite_cluster: Cluster, tmp_path: Path
) -> None:
    _, url = await started_api(sqlite_cluster, "api", env(tmp_path, trusted_proxies="127.0.0.1"))
    one_client = ["203.0.113.7"] * 4
    assert await failed_logins(url, one_client) == [401, 401, 401, 429]
    # Another client behind the same proxy has its own budget.
    assert await failed_logins(url, ["203.0.113.8"]) == [401]
