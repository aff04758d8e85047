"""SQLite's wake-ups across processes (store/drivers/sqlite_sessions.py `WakeSockets`): a
commit that made jobs runnable rings every other process's listener at once, as NOTIFY
does on PostgreSQL, instead of at its next data_version look."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conveyor.store.drivers.sqlite_sessions import LocalBus, SqliteListener, WakeSockets, _clear

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets")

RING = "from conveyor.store.drivers.sqlite_sessions import WakeSockets; WakeSockets({!r}).ring()"


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "conveyor.db")


async def _listening(db_path: str, heard: list[str]) -> SqliteListener:
    listener = SqliteListener(
        LocalBus(), db_path, heard.append, lambda _job: None, WakeSockets(db_path)
    )
    await listener.start("PRAGMA data_version")
    return listener


async def _woken(heard: list[str]) -> list[str]:
    """What the listener heard once it heard something (up to 5 s)."""
    for _ in range(500):
        if heard:
            break
        await asyncio.sleep(0.01)
    return heard


async def test_another_processs_ring_wakes_a_listener_without_a_commit(db_path: str) -> None:
    """No commit happens (data_version stays): only the datagram can have woken it."""
    heard: list[str] = []
    listener = await _listening(db_path, heard)
    try:
        ring = [sys.executable, "-c", RING.format(db_path)]
        done = await asyncio.to_thread(subprocess.run, ring, check=True, timeout=60)
        assert done.returncode == 0
        assert await _woken(heard) == ["*"]
    finally:
        await listener.close()


async def test_a_ring_skips_this_process_and_removes_the_gone(db_path: str) -> None:
    """This process's own listeners hear the in-process bus; a socket left by a process
    that is gone (killed: never unlinked) refuses the datagram and is removed."""
    heard: list[str] = []
    listener = await _listening(db_path, heard)
    wake = WakeSockets(db_path)
    assert wake.dir is not None
    left = wake.dir / "999999999-dead"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(left))
    stale.close()  # bound once, nobody reads it now
    try:
        wake.ring()
        await asyncio.sleep(0.2)
        assert heard == []
        assert not left.exists()
    finally:
        wake.close()
        await listener.close()
    assert not wake.dir.exists()  # the last listener's socket went, and the directory
    again = await _listening(db_path, heard)  # a listener after that makes it anew
    try:
        assert [p.name for p in wake.dir.iterdir()] != []
    finally:
        await again.close()


def test_a_directory_another_user_could_write_is_not_used(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="cw-"))  # short: a socket's path has a limit
    try:
        monkeypatch.setattr(tempfile, "gettempdir", lambda: str(shared))
        wake = WakeSockets(db_path)
        assert wake.dir is not None and not wake.dir.exists()  # only a listener makes it
        opened = wake.open()
        assert opened is not None
        opened[0].close()
        for made in (wake.dir.parent, wake.dir):
            made.chmod(0o777)
        assert WakeSockets(db_path).open() is None
        wake.ring()  # nor is it rung
    finally:
        shutil.rmtree(shared)


def test_a_process_that_never_listens_leaves_no_directory(db_path: str) -> None:
    wake = WakeSockets(db_path)
    wake.ring()
    wake.close()
    assert wake.dir is not None and not wake.dir.exists()


def _dead(where: Path, name: str) -> Path:
    """A socket file as a killed process leaves it: bound once, never unlinked."""
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    left = where / name
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(left))
    stale.close()
    return left


def test_a_processs_first_listener_clears_what_killed_processes_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file nobody rings again (a test's database, gone) kept a killed process's socket and
    its directory for ever; the first listener of the next process clears them, and leaves
    live listeners' sockets (and their directories) where they are."""
    shared = Path(tempfile.mkdtemp(prefix="cw-"))  # short: a socket's path has a limit
    try:
        monkeypatch.setattr(tempfile, "gettempdir", lambda: str(shared))
        monkeypatch.setattr("conveyor.store.drivers.sqlite_sessions._swept", False, raising=False)
        live = WakeSockets(str(tmp_path / "live.db"))
        opened = live.open()  # this process's first listener: nothing to clear yet
        assert opened is not None and live.dir is not None
        beside_live = _dead(live.dir, "999999998-dead")
        gone = WakeSockets(str(tmp_path / "gone.db")).dir
        assert gone is not None
        only_dead = _dead(gone, "999999999-dead")
        monkeypatch.setattr(
            "conveyor.store.drivers.sqlite_sessions._swept", False, raising=False
        )  # anew
        mine = WakeSockets(str(tmp_path / "mine.db"))
        again = mine.open()
        assert again is not None
        assert not beside_live.exists() and opened[1].exists()
        assert not only_dead.exists() and not gone.exists()
        assert mine.dir is not None and again[1].exists()
        for sock, _path in (opened, again):
            sock.close()
    finally:
        shutil.rmtree(shared)


async def test_another_processs_sweep_leaves_a_live_listener_asleep(db_path: str) -> None:
    """The first listener of every process probes the other files' sockets to clear the
    dead ones; a live listener reads the probe and wakes no one: each process starting on
    this host woke every other file's workers for nothing (and a test's count of wake-ups
    by one). A ring after it still wakes it."""
    heard: list[str] = []
    listener = await _listening(db_path, heard)
    wake = WakeSockets(db_path)
    assert wake.dir is not None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.setblocking(False)
            _clear(wake.dir, probe)  # what another process's first listener does
        await asyncio.sleep(0.2)
        assert heard == []
        wake.ring(mine_too=True)
        assert await _woken(heard) == ["*"]
    finally:
        wake.close()
        await listener.close()
