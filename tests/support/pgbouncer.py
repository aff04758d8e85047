"""A private PgBouncer in front of the shared PostgreSQL, for the tests that run Conveyor
through one (tests/store/test_pgbouncer.py).

Its own configuration in a temporary directory, listening on 127.0.0.1 on a free port,
trust authentication for the test user, one pool mode; started as its own process and
stopped by its pid. PgBouncer refuses to run as root, so when the tests run as root (CI and
this machine) it drops to the `postgres` system user, which must be able to read the
directory. Without the binary the tests skip (fail in CI, where .ci/run installs it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@dataclass
class PgBouncer:
    port: int
    mode: str
    log: Path
    popen: subprocess.Popen[bytes]

    def url(self, db_url: str) -> str:
        """`db_url` (a database on the shared server) reached through this PgBouncer."""
        url = make_url(db_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def admin_url(self) -> str:
        """The console (`SHOW POOLS`, `SHOW CLIENTS`): simple queries only."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/pgbouncer"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@contextlib.contextmanager
def pgbouncer(
    directory: Path,
    *,
    server: tuple[str, int],
    mode: str = "session",
    pool_size: int = 60,
    ignore: str = "",
) -> Iterator[PgBouncer]:
    """Run PgBouncer in `mode` in front of `server` until the block ends.

    `ignore` is PgBouncer's `ignore_startup_parameters`: startup parameters it drops instead
    of refusing the connection."""
    if not os.path.exists(PGBOUNCER):
        raise FileNotFoundError(PGBOUNCER)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    host, server_port = server
    (directory / "userlist.txt").write_text('"postgres" ""\n')
    log = directory / "pgbouncer.log"
    lines = [
        "[databases]",
        f"* = host={host} port={server_port}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {directory / 'userlist.txt'}",
        "admin_users = postgres",
        f"pool_mode = {mode}",
        "max_client_conn = 500",
        f"default_pool_size = {pool_size}",
        f"logfile = {log}",
        f"pidfile = {directory / 'pgbouncer.pid'}",
        "server_login_retry = 1",
    ]
    if ignore:
        lines.append(f"ignore_startup_parameters = {ignore}")
    config = directory / "pgbouncer.ini"
    config.write_text("\n".join(lines) + "\n")
    command = [PGBOUNCER, str(config)]
    if os.geteuid() == 0:  # it will not run as root
        user = pwd.getpwnam("postgres")
        os.chmod(directory, 0o755)
        for parent in directory.parents:  # the temp dirs above it may be private to root
            if parent == Path(parent.anchor) or parent.stat().st_mode & 0o001:
                continue
            os.chmod(parent, parent.stat().st_mode | 0o001)
        for path in (directory, config, directory / "userlist.txt"):
            os.chown(path, user.pw_uid, user.pw_gid)
        command = [PGBOUNCER, "-u", "postgres", str(config)]
    with (directory / "pgbouncer.stderr").open("wb") as stderr:  # the child keeps a copy
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            if popen.poll() is not None or time.monotonic() > deadline:
                said = (directory / "pgbouncer.stderr").read_text(errors="replace")
                raise RuntimeError(f"pgbouncer did not start ({popen.poll()}): {said}")
            time.sleep(0.05)
        yield PgBouncer(port, mode, log, popen)
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)  # immediate shutdown: clients are cut
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
