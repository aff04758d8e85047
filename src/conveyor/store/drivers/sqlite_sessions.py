"""SQLite's wake-ups and leadership: an in-process bus, a data_version watch, a lease row."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import sqlite3
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from conveyor.domain.clock import utcnow
from conveyor.store.database import Database
from conveyor.store.driver import Callback
from conveyor.store.drivers.processes import ProcessId, is_gone, this_process
from conveyor.store.drivers.sqlite_dbapi import in_one_trip
from conveyor.store.tables import leader_leases
from conveyor.store.types import sqlite_time

# How often a process looks for commits made by other processes (`PRAGMA data_version`, on
# the event loop's own thread: about 3 us of CPU in WAL mode, no lock that waits). Conveyor's
# own commits that make jobs runnable or write events ring every other process's listener
# by datagram (`WakeSockets`), so this look is the net: for commits that ring nothing (a
# library caller's own connection, another host on a shared disk) and for a lost datagram.
# At 2 ms it was half of an idle `conveyor run`'s CPU (6.3 -> 3.0 % of a core at 50 ms,
# 20 s from /proc, session 19), for wake-ups the datagrams now bring.
CROSS_PROCESS_POLL = 0.05

log = logging.getLogger("conveyor.store")


class LocalBus:
    """In-process wake-ups, per database file: enqueue and cancel reach this process at once."""

    def __init__(self) -> None:
        self.jobs: set[Callback] = set()
        self.cancels: set[Callback] = set()

    def emit(self, targets: set[Callback], value: str) -> None:
        for callback in list(targets):
            callback(value)


_buses: dict[str, LocalBus] = defaultdict(LocalBus)


def bus_of(url: str) -> LocalBus:
    return _buses[url]


class WakeSockets:
    """This host's processes listening on one database file, each a datagram socket in a
    private directory: a commit that made jobs runnable wakes the others at once (`ring`),
    as PostgreSQL's NOTIFY does, instead of at their next data_version look (1 ms on
    average, and a timer's wake-up). The look stays: for commits of processes that send
    nothing (a library caller's own connection), and for a lost datagram. A socket whose
    process is gone (killed) refuses the datagram and is removed by the next ring."""

    LIST_EVERY_S = 1.0  # how often a ring lists the directory again (new listeners)

    def __init__(self, db_path: str) -> None:
        self.dir = _wake_dir(db_path)
        self._peers: list[Path] = []
        self._listed = float("-inf")
        self._sender: socket.socket | None = None

    def open(self) -> tuple[socket.socket, Path] | None:
        """A listener's own socket, bound in the directory (made now: only listeners make
        it); None where there is none (no Unix datagram sockets, or no private directory
        to put them in)."""
        if self.dir is None or not _private(self.dir):
            return None
        path = self.dir / f"{_mine()}{secrets.token_hex(4)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for again in (True, False):
            try:
                sock.bind(str(path))
                break
            except FileNotFoundError:  # the last listener removed it just now (`close`)
                if again and _private(self.dir):
                    continue
                sock.close()
                return None
            except OSError as exc:
                sock.close()
                log.debug("no wake-up socket at %s: %s", path, exc)
                return None
        self._listed = float("-inf")  # a new listener: list again
        _sweep_once(self.dir)
        return sock, path

    def ring(self, *, mine_too: bool = False) -> None:
        """Wake every other process's listener (nothing is said: each looks for itself);
        with `mine_too`, this process's as well (a commit Conveyor's in-process signal did
        not see: a library caller's own connection, store/foreign.py)."""
        if self.dir is None:
            return
        now = time.monotonic()
        if mine_too or now - self._listed >= self.LIST_EVERY_S:
            self._peers = self._list(mine_too)
            self._listed = float("-inf") if mine_too else now
        if not self._peers:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for peer in list(self._peers):
            try:
                self._sender.sendto(b"*", str(peer))
            except BlockingIOError:
                pass  # its queue is full: it has wake-ups to read already
            except (ConnectionRefusedError, FileNotFoundError):
                self._peers.remove(peer)  # its process is gone
                with contextlib.suppress(OSError):
                    peer.unlink()
            except OSError as exc:
                log.debug("wake-up to %s failed: %s", peer, exc)

    def _list(self, mine_too: bool = False) -> list[Path]:
        """The other processes' sockets (and this one's, `mine_too`); none while the
        directory is not there, or is not this user's own."""
        assert self.dir is not None
        try:
            if not _owned(self.dir):
                return []
            mine = "/" if mine_too else _mine()  # no name starts with "/"
            return [p for p in self.dir.iterdir() if not p.name.startswith(mine)]
        except OSError:
            return []

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None


_swept = False  # whether this process has swept the other files' directories
# A sweep's datagram: refused by a dead process's socket, read and ignored by a live
# listener (a ring is b"*"), so starting a process wakes no other file's workers.
PROBE = b""


def _sweep_once(own: Path) -> None:
    """The first listener of a process clears what killed processes left beside `own`: in
    every other database file's directory, each socket that refuses a datagram (its process
    is gone; a live one reads the empty `PROBE` and wakes no one), then the directory if that
    emptied it.
    A file nobody rings again (a test's, a removed deployment's) would keep them for ever:
    the last listener removes a directory (`close`), a killed one cannot."""
    global _swept
    if _swept:
        return
    _swept = True
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        probe.setblocking(False)
        for where in own.parent.iterdir():
            if where != own and where.is_dir() and _owned(where):
                _clear(where, probe)


def _clear(where: Path, probe: socket.socket) -> None:
    with contextlib.suppress(OSError):
        for peer in where.iterdir():
            try:
                probe.sendto(PROBE, str(peer))
            except (ConnectionRefusedError, FileNotFoundError):
                peer.unlink(missing_ok=True)
            except OSError:  # a full queue, or not a socket: someone's, left alone
                pass
        where.rmdir()  # only if it is empty now (OSError otherwise): a listener's stays


def _mine() -> str:
    """The name prefix of this process's sockets (its own listeners hear the bus instead)."""
    return f"{os.getpid()}-"


def _wake_dir(db_path: str) -> Path | None:
    """The file's wake-up directory: one per database file and user, in the temporary
    directory (not made here: `_private`); None on a platform without Unix datagram
    sockets, for an in-memory database, or where a socket's path would be too long."""
    if db_path in ("", ":memory:") or not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid"):
        return None
    key = hashlib.sha256(os.path.realpath(db_path).encode()).hexdigest()[:16]
    where = Path(tempfile.gettempdir()) / f"conveyor-wake-{os.getuid()}" / key
    return where if len(str(where)) <= 80 else None  # a socket's path: under ~107 bytes


def _private(where: Path) -> bool:
    """Make `where` (and its parent) 0700 if missing; whether both are this user's own and
    no one else's to write (a directory another user made first is not trusted)."""
    try:
        for part in (where.parent, where):
            part.mkdir(mode=0o700, exist_ok=True)
            if not _owned(part):
                return False
    except OSError:
        return False
    return True


def _owned(part: Path) -> bool:
    seen = part.lstat()
    return not part.is_symlink() and seen.st_uid == os.getuid() and not seen.st_mode & 0o077


class SqliteListener:
    """In-process callbacks, plus a watch on PRAGMA data_version for other processes' commits."""

    def __init__(
        self,
        bus: LocalBus,
        path: str,
        on_jobs: Callback,
        on_cancel: Callback,
        wake: WakeSockets | None = None,
    ) -> None:
        self._bus = bus
        self._path = path
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._task: asyncio.Task[None] | None = None
        self._wake = wake
        self._socket: tuple[socket.socket, Path] | None = None

    async def start(self, data_version: str) -> None:
        self._bus.jobs.add(self._on_jobs)
        self._bus.cancels.add(self._on_cancel)
        self._task = asyncio.create_task(self._watch(data_version), name="sqlite-data-version")
        if self._wake is not None and (opened := self._wake.open()) is not None:
            self._socket = opened
            asyncio.get_running_loop().add_reader(opened[0].fileno(), self._rung)

    def _rung(self) -> None:
        """Another process's ring: read every datagram waiting, then one wake-up; none for
        a sweep's probe alone (`PROBE`, empty)."""
        assert self._socket is not None
        sock = self._socket[0]
        rung = False
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                rung = sock.recv(16) != PROBE or rung
        if rung:
            self._on_jobs("*")

    async def _watch(self, data_version: str) -> None:
        # Its own autocommit connection: inside a transaction data_version would be frozen.
        # timeout=0: a look that would have to wait (a lock in a non-WAL file) fails at once
        # and counts as a change; the loop never blocks on it.
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=0)
        try:
            last = None
            while True:
                try:
                    row = conn.execute(data_version).fetchone()
                except sqlite3.OperationalError:
                    row = None
                version = row[0] if row else None
                if last is not None and version != last:
                    self._on_jobs("*")
                last = version
                await asyncio.sleep(CROSS_PROCESS_POLL)
        finally:
            conn.close()

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        self._bus.jobs.discard(self._on_jobs)
        self._bus.cancels.discard(self._on_cancel)
        if self._socket is not None:
            sock, path = self._socket
            self._socket = None
            with contextlib.suppress(Exception):  # a loop already closed
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()
                path.parent.rmdir()  # the file's last listener on this host: no litter
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LeaseLeadership:
    """Leadership as a row with an expiry, renewed by its holder: SQLite has no advisory locks.

    The row also names the holder's process. A contender that cannot take the row reads it,
    and when the holder is a process of this host that is gone (killed, crashed: see
    processes.py) takes it at once instead of waiting out the expiry; a live holder, or one
    on another host, keeps it until it expires. `statements` are the named take-or-renew and
    give-up statements."""

    def __init__(
        self,
        db: Database,
        statements: tuple[str, str],
        name: str,
        holder: str,
        ttl: float,
    ) -> None:
        self._db, self._name, self._holder, self._ttl = db, name, holder, ttl
        self._lead, self._unlead = statements
        self._me = this_process()

    async def acquire(self) -> bool:
        if await self._try(dead=None):
            return True
        dead = await self._dead_holder()
        return dead is not None and await self._try(dead=dead)

    async def _try(self, dead: str | None) -> bool:
        now = utcnow()
        params = {
            "name": self._name,
            "holder": self._holder,
            "now": sqlite_time(now),
            "expires": sqlite_time(now + timedelta(seconds=self._ttl)),
            "host": self._me.host,
            "pid": self._me.pid,
            "pid_started": self._me.started,
            "dead": dead,
        }
        # BEGIN to COMMIT in one trip: every scheduler tick renews it, in the handlers'
        # process under `conveyor run` (docs/design.md "A blocked event loop").
        async with self._db.write() as conn:
            took = await in_one_trip(
                conn, lambda raw: raw.execute(self._lead, params).fetchone(), end=True
            )
        return took is not None

    async def _dead_holder(self) -> str | None:
        """The current holder, when its process is certainly gone; None otherwise."""
        query = select(
            leader_leases.c.holder,
            leader_leases.c.host,
            leader_leases.c.pid,
            leader_leases.c.pid_started,
        ).where(leader_leases.c.name == self._name)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None or row.host is None or row.pid is None or row.holder == self._holder:
            return None
        gone = is_gone(ProcessId(row.host, row.pid, row.pid_started))
        return str(row.holder) if gone else None

    async def release(self) -> None:
        params = {"name": self._name, "holder": self._holder}
        async with self._db.write() as conn:
            await in_one_trip(conn, lambda raw: raw.execute(self._unlead, params), end=True)
