"""A private PostgreSQL cluster the suite starts itself, restarts, and removes.

``initdb`` in a temporary directory, its own port on 127.0.0.1 and a socket directory of its
own, trust authentication, ``fsync=off`` (safe against process crashes, which is all the
suite causes: the operating system keeps what was written). Run as the ``postgres`` system
user when the suite runs as root (initdb refuses root), as the current user otherwise. The
machine's shared server is never touched: a restart here stops nobody else's database.

`ReplicatedPair` is a primary and a streaming standby made from it with ``pg_basebackup -R``
through a physical replication slot, with synchronous replication (the primary waits for
the standby's flush before it acknowledges a commit), so that a failover (`crash` the
primary, `promote` the standby) loses no acknowledged commit: the failover scenario.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

StopMode = Literal["smart", "fast", "immediate"]
START_TIMEOUT_S = 60
SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
    "-c max_connections=300 -c shared_buffers=64MB"
)
# Streaming replication (PostgreSQL's defaults since 10, spelled out): WAL detailed enough
# for a standby, senders and slots for it, read-only queries on the standby.
REPLICATION_OPTIONS = (
    "-c wal_level=replica -c max_wal_senders=4 -c max_replication_slots=4 -c hot_standby=on"
)
STREAMING_TIMEOUT_S = 60


class ClusterError(RuntimeError):
    """The private cluster could not be created, started or stopped; the message says why."""


def binaries() -> Path:
    """The newest PostgreSQL version's bin directory (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found:
        raise ClusterError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """One throw-away cluster: `start`, `restart`, `stop` (which also removes its files)."""

    def __init__(self, port: int | None = None, name: str = "conveyor", options: str = "") -> None:
        """`name` is the cluster_name, which a standby's WAL receiver also gives the primary
        as its application_name; `options` are more server settings (``-c k=v ...``)."""
        self.bin = binaries()
        self.name = name
        self.options = options
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="conveyor-chaos-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = START_TIMEOUT_S) -> str:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")
            raise ClusterError(f"{' '.join(argv[:2])} exited {done.returncode}:\n{out[-2000:]}")
        return done.stdout.decode(errors="replace")

    def start(self) -> None:
        """initdb (first time only), then start and wait until it accepts connections."""
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} {SERVER_OPTIONS} {REPLICATION_OPTIONS} "
            f"-c cluster_name={self.name} {self.options}"
        )
        args = ["pg_ctl", action, "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S)]
        if action in ("start", "restart"):
            args += ["-l", str(self.logfile), "-o", options]
        self._run(*args, *extra, timeout=START_TIMEOUT_S + 10)

    def restart(self, mode: StopMode = "fast", down_seconds: float = 0.0) -> None:
        """Stop with `mode` (``immediate`` is a crash: recovery replays the WAL at start),
        stay down `down_seconds` (a failover takes a while), start again."""
        if down_seconds <= 0:
            self._pg_ctl("restart", "-m", mode)
            return
        self._pg_ctl("stop", "-m", mode)
        time.sleep(down_seconds)
        self._pg_ctl("start")

    def crash(self) -> None:
        """Stop at once, as a crashed host would (no checkpoint, no goodbye to clients);
        the files stay (`stop` removes them)."""
        self._pg_ctl("stop", "-m", "immediate")

    def promote(self) -> None:
        """A standby becomes a primary (a new timeline); returns once it accepts writes."""
        self._pg_ctl("promote")

    def basebackup_of(self, primary: PrivateCluster, slot: str) -> None:
        """This cluster's data directory as a copy of `primary`'s, set up to stream from it
        (``-R``: primary_conninfo and standby.signal) through the replication slot `slot`,
        made here (``-C``), so the primary keeps the WAL this standby still needs."""
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(self.data), "-R", "-X", "stream", "-C", "-S", slot, "-c", "fast", "-w",
        )  # fmt: skip

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def sql(self, query: str) -> str:
        """One query's result as text, through psql on the socket directory (no driver:
        the blocking side of the suite uses it)."""
        out = self._run("psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
                        "-d", "postgres", "-XAtqc", query)  # fmt: skip
        return out.strip()

    def stop(self) -> None:
        """Stop at once and remove every file; safe to call twice."""
        if self.running():
            with contextlib.suppress(ClusterError):
                self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class ReplicatedPair:
    """A primary and its synchronous streaming standby, each a `PrivateCluster`.

    The primary names the standby in ``synchronous_standby_names`` (with ``synchronous_commit
    = on``, the default) on its own command line, not in a configuration file: the standby's
    copy of the files must not carry it, or once promoted, with no standby of its own, it
    would wait for one forever on every commit (Patroni's non-strict synchronous mode does
    the same: a primary without replicas commits alone)."""

    SLOT = "conveyor_standby"

    def __init__(self) -> None:
        self.standby_name = "standby"
        sync = f"-c synchronous_standby_names={self.standby_name} -c synchronous_commit=on"
        self.primary = PrivateCluster(name="primary", options=sync)
        self.standby = PrivateCluster(name=self.standby_name)

    def start(self) -> None:
        """initdb and start the primary, copy it, start the standby, and return once the
        primary reports it streaming as its synchronous standby."""
        self.primary.start()
        self.standby.basebackup_of(self.primary, self.SLOT)
        self.standby.start()
        deadline = time.monotonic() + STREAMING_TIMEOUT_S
        while (state := self.sync_state()) != "sync":
            if time.monotonic() > deadline:
                raise ClusterError(f"the standby is not a synchronous standby: {state!r}")
            time.sleep(0.2)

    def sync_state(self) -> str:
        """The standby's `pg_stat_replication.sync_state` as the primary sees it ('' if none)."""
        query = (
            "SELECT sync_state FROM pg_stat_replication "
            f"WHERE application_name = '{self.standby_name}' AND state = 'streaming'"
        )
        return self.primary.sql(query)

    def stop(self) -> None:
        """Both stopped and removed; safe to call twice."""
        self.standby.stop()
        self.primary.stop()


@contextlib.contextmanager
def replicated_pair() -> Iterator[ReplicatedPair]:
    pair = ReplicatedPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
