"""Fixtures: a real SQLite file and a real PostgreSQL database per test, both migrated.

PostgreSQL tests copy a template database migrated once per session (fast). Without a
server they are skipped on a laptop, and fail in CI (CI=true), where a missing service is a
broken machine, not a reason to pass.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from chaos.proxy import Proxy
from sqlalchemy.engine import make_url

from conveyor.auth.passwords import configure_argon2
from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database
from conveyor.store.factory import open_backend
from conveyor.store.migrate import migrate
from tests.support.processes import Cluster

PG_HOST = os.environ.get("CONVEYOR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CONVEYOR_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CONVEYOR_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("CONVEYOR_TEST_PG_DB", "test")
IN_CI = os.environ.get("CI", "").lower() == "true"
ROOT = Path(__file__).resolve().parent.parent


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _missing(service: str, why: object) -> None:
    message = f"{service} is not reachable ({why})"
    if IN_CI:
        pytest.fail(f"{message}: CI needs it running")
    pytest.skip(message)


async def _pg_admin() -> asyncpg.Connection:
    return await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5
    )


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test copies."""
    name = f"conveyor_tpl_{os.getpid()}"

    async def create() -> None:
        admin = await _pg_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        db = Database(pg_url(name))
        try:
            await migrate(db)
        finally:
            await db.dispose()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        _missing("PostgreSQL", exc)
    yield name
    asyncio.run(_drop(name))


async def _drop(name: str) -> None:
    admin = await _pg_admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"

    async def create() -> None:
        db = Database(f"sqlite:///{path}")
        try:
            await migrate(db)
        finally:
            await db.dispose()

    asyncio.run(create())
    return path


@contextmanager
def fresh_database(kind: str, request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """A new, migrated database of `kind` ("sqlite" in `directory`, or "postgres"), dropped
    afterwards; copied from the session's template, which is fast."""
    if kind == "sqlite":
        target = directory / "conveyor.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"conveyor_t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await _pg_admin()
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await admin.close()

    asyncio.run(create())
    try:
        yield pg_url(name)
    finally:
        asyncio.run(_drop(name))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind."""
    with fresh_database(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture
async def backend(db_url: str) -> AsyncIterator[QueueBackend]:
    opened = open_backend(db_url)
    yield opened
    await opened.close()


@pytest.fixture
def cluster(db_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Real `conveyor` processes on the test's database, killed at the end."""
    started = Cluster(db_url, tmp_path)
    try:
        yield started
    finally:
        started.close()
        print(started.report())  # pytest shows it when the test failed


@pytest.fixture(autouse=True)
def cheap_argon2(request: pytest.FixtureRequest) -> Iterator[None]:
    """Argon2 at its cheapest valid cost, except in tests/auth, which checks the real one.

    Real parameters cost ~0.5 s of CPU per hash here; what the other tests check does not
    depend on the cost. Subprocess tests set CONVEYOR_ARGON2_* for the same reason.
    """
    if "tests/auth" in str(request.node.path):
        yield
        return
    configure_argon2(time_cost=1, memory_kib=1024)
    yield
    configure_argon2()


STUCK_AFTER_S = 10.0


@pytest.fixture(autouse=True)
def _stuck_task_check(request: pytest.FixtureRequest) -> None:
    """Async tests check, at the end, that every task they left behind dies when cancelled
    (requested first, so it is torn down after the test's other fixtures)."""
    if inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        request.getfixturevalue("no_stuck_tasks")


@pytest.fixture
async def no_stuck_tasks() -> AsyncIterator[None]:
    """Cancel the tasks a test left running (after its other fixtures are torn down) and fail
    the test, naming each one with its stack, if one still runs after `STUCK_AFTER_S`.

    Without this, such a task hangs the event loop's close inside pytest-asyncio, with no
    name and past pytest-timeout (seen once in a full run): in production it would hang a
    process's shutdown the same way, so it is a bug to find, not to wait out.
    """
    yield
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in left:
        task.cancel()
    if not left:
        return
    _, stuck = await asyncio.wait(left, timeout=STUCK_AFTER_S)
    if stuck:
        described = "\n".join(f"{t.get_name()}: {t.get_coro()!r}\n{_stack(t)}" for t in stuck)
        for task in stuck:  # let the loop close; the failure below says what was stuck
            asyncio.tasks._unregister_task(task)
        pytest.fail(f"{len(stuck)} task(s) ignored cancellation:\n{described}")


def _stack(task: asyncio.Task[Any]) -> str:
    out = io.StringIO()
    task.print_stack(file=out)
    return out.getvalue()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """The chaos suite's TCP proxy in front of the shared PostgreSQL (pass, cut, partition):
    connect through it with `through_proxy`."""
    started = Proxy(PG_HOST, PG_PORT)
    await started.start()
    yield started
    await started.stop()


def through_proxy(db_url: str, proxy: Proxy) -> str:
    """`db_url` (a PostgreSQL database) reached through `proxy`."""
    url = make_url(db_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)
