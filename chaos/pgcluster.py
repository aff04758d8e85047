"""A private PostgreSQL cluster the suite starts itself, restarts, and removes.

``initdb`` in a temporary directory, its own port on 127.0.0.1 and a socket directory of its
own, trust authentication, ``fsync=off`` (safe against process crashes, which is all the
suite causes: the operating system keeps what was written). Run as the ``postgres`` system
user when the suite runs as root (initdb refuses root), as the current user otherwise. The
machine's shared server is never touched: a restart here stops nobody else's database.
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

    def __init__(self, port: int | None = None) -> None:
        self.bin = binaries()
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
        out = (done.stdout + done.stderr).decode(errors="replace")
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(argv[:2])} exited {done.returncode}:\n{out[-2000:]}")
        return out

    def start(self) -> None:
        """initdb (first time only), then start and wait until it accepts connections."""
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} {SERVER_OPTIONS}"
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

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

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
