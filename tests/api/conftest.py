"""A running app per test on each database, with mail written as real .eml files to read.

Account mail is a durable job: reading the mail first runs what is queued on the ``mail``
queue through a real worker (in burst mode), as `conveyor run`'s worker would.
"""

from __future__ import annotations

import email
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.runtime import Engine
from conveyor.server import create_app
from conveyor.settings import Settings

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-123"
PASSWORD = "correct horse battery"


@dataclass
class Api:
    client: httpx.AsyncClient
    engine: Engine
    settings: Settings
    mail_dir: Path

    async def deliver(self) -> None:
        """Send the queued mail: a burst worker on the ``mail`` queue, until it is empty."""
        await self.engine.worker("mail", concurrency=4, burst=True).run()

    async def mails_to(self, address: str) -> list[Message]:
        await self.deliver()
        found = []
        for path in sorted(self.mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
            message = email.message_from_bytes(path.read_bytes())
            if message["To"] == address:
                found.append(message)
        return found

    async def code_for(self, address: str) -> str:
        (*_, last) = await self.mails_to(address)
        body = last.get_payload(decode=True) if not last.is_multipart() else None
        text = (
            body.decode()
            if isinstance(body, bytes)
            else str(last.get_payload(0).get_payload(decode=True).decode())  # type: ignore[union-attr]
        )
        match = re.search(r"\b(\d{6})\b", text)
        assert match, text
        return match.group(1)

    async def user(self, address: str, password: str = PASSWORD) -> dict[str, str]:
        """Register, verify and log in a user; the Authorization header for them."""
        r = await self.client.post(
            "/api/v1/auth/register", json={"email": address, "password": password}
        )
        assert r.status_code == 202, r.text
        code = await self.code_for(address)
        r = await self.client.post("/api/v1/auth/verify", json={"email": address, "code": code})
        assert r.status_code == 200, r.text
        return await self.login(address, password)

    async def login(self, address: str, password: str = PASSWORD) -> dict[str, str]:
        r = await self.client.post(
            "/api/v1/auth/login", json={"email": address, "password": password}
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    async def admin(self) -> dict[str, str]:
        return await self.login(ADMIN_EMAIL, ADMIN_PASSWORD)


# The production default of `db_request_timeout`, for the tests of the deadline itself.
DEADLINE_S: float = Settings.model_fields["db_request_timeout"].default


def api_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "data_dir": tmp_path / "data",
        "secret_key": "test-secret-key-that-is-long-enough-for-hs256",
        "mail_url": f"file://{tmp_path / 'mail'}",
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "log_file": None,
        "rate_limit_auth": "1000/minute",
        "rate_limit_submit": "10000/minute",
        # A test about something else must not get a starved machine's 503s (CI failed so at
        # load 5 on 2 cores); the tests of the deadline itself pass `DEADLINE_S`.
        "db_request_timeout": 30.0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    engine = await Engine.open(settings)
    app = create_app(settings, engine=engine)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Api(client, engine, settings, Path(settings.mail_url.removeprefix("file://")))
    finally:
        await engine.close()


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(api_settings(db_url, tmp_path)) as running:
        yield running
