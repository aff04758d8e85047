"""Real `conveyor` processes for one scenario, and the record of which ones died and why.

Each process runs from this tree's ``src/`` (first on PYTHONPATH, so a git worktree runs its
own code), loads `chaos.handlers`, writes its output to ``<workdir>/logs/<name>.out`` and
starts in a session of its own: stopping it stops whatever it forked (process-pool children)
by that group's id alone, never by a name. The suite kills with `kill` (SIGKILL, noted as a
fault); any other exit before the end is an unexpected exit, which fails the scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from chaos.handlers import RECORD_DIR_ENV

ROOT = Path(__file__).resolve().parents[1]
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))
CHILD_PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
SECRET = "chaos-suite-secret-key-not-for-production-0123456789"


def base_settings(lease: float) -> dict[str, str]:
    """Short leases so a fault shows within seconds; the API out of the suite's way."""
    return {
        "lease_seconds": f"{lease}",
        "heartbeat_interval": f"{min(0.5, lease / 4)}",
        "scheduler_interval": "0.2",
        "poll_interval": "0.5",
        "shutdown_grace": "2",
        "secret_key": SECRET,
        "email_verification": "false",
        "rate_limit_submit": "100000000/minute",
        "rate_limit_jobs": "1000000000/minute",
        "rate_limit_auth": "100000/minute",
        "rate_limit_login_account": "100000/minute",
        "argon2_time_cost": "1",
        "argon2_memory_kib": "1024",
        "metrics_refresh_interval": "0",
        "allow_private_urls": "true",
        "webhook_backoff_initial": "0.5",
        "webhook_backoff_max": "2",
        "webhook_poll_interval": "0.5",
        "relay_poll_interval": "0.5",
        "relay_lease_seconds": f"{lease}",
        "handler_modules": "chaos.handlers",
    }


class Proc:
    """One `conveyor` subprocess."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], out: Path, port: int) -> None:
        self.name = name
        self.popen = popen
        self.out = out
        self.port = port  # the API's port (0: none)
        self.killed_at: float | None = None  # by the suite
        self.gone_at: float | None = None  # seen gone after the suite's kill
        self.stopping = False  # the suite is stopping it: its exit is expected

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class Fleet:
    """The processes of one scenario, all on one database and one record directory."""

    def __init__(self, workdir: Path, db_url: str, settings: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.settings = dict(settings)
        self.records = workdir / "records"
        self.logs = workdir / "logs"
        self.records.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def env(self, name: str, db_url: str | None, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        settings = {**self.settings, **extra}
        env.update({f"CONVEYOR_{key.upper()}": value for key, value in settings.items()})
        env.update(
            PYTHONPATH=CHILD_PYTHONPATH,
            PYTHONUNBUFFERED="1",
            CONVEYOR_DATABASE_URL=db_url or self.db_url,
            CONVEYOR_DATA_DIR=str(self.workdir / "data"),
            CONVEYOR_LOG_FILE=str(self.logs / f"{name}.app.log"),
        )
        env[RECORD_DIR_ENV] = str(self.records)
        return env

    def spawn(
        self,
        name: str,
        args: list[str],
        *,
        db_url: str | None = None,
        port: int = 0,
        extra: Mapping[str, str] | None = None,
    ) -> Proc:
        """`db_url`: another address of the same database (through the proxy)."""
        out = self.logs / f"{name}.out"
        with out.open("ab") as sink:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                [CONVEYOR, *args],
                cwd=self.workdir,
                env=self.env(name, db_url, extra or {}),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, out, port)
        self.procs.append(proc)
        return proc

    def migrate(self) -> None:
        done = subprocess.run(
            [CONVEYOR, "migrate"],
            cwd=self.workdir,
            env=self.env("migrate", None, {}),
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"conveyor migrate failed:\n{done.stdout.decode()[-2000:]}")

    def worker(self, name: str, concurrency: int = 4, *, db_url: str | None = None) -> Proc:
        args = ["worker", "--queues", "default", "--concurrency", str(concurrency)]
        return self.spawn(name, args, db_url=db_url)

    def scheduler(self, name: str, *, db_url: str | None = None) -> Proc:
        return self.spawn(name, ["scheduler"], db_url=db_url)

    def relay(self, name: str, *, db_url: str | None = None) -> Proc:
        return self.spawn(name, ["results"], db_url=db_url)

    def api(self, name: str, port: int, *, db_url: str | None = None) -> Proc:
        return self.spawn(name, ["api", "--port", str(port)], db_url=db_url, port=port)

    def run(self, name: str, port: int, concurrency: int = 4, *, db_url: str | None = None) -> Proc:
        args = ["run", "--port", str(port), "--concurrency", str(concurrency)]
        return self.spawn(name, args, db_url=db_url, port=port)

    async def kill(self, proc: Proc) -> float:
        """SIGKILL one process (not its group: a real crash leaves pool children behind);
        returns the time of the kill."""
        proc.killed_at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        for _ in range(200):
            if not proc.running():
                proc.gone_at = time.time()
                break
            await asyncio.sleep(0.05)
        return proc.killed_at

    def unexpected_exits(self) -> list[str]:
        """`name=code` of every process that exited without the suite killing or stopping it."""
        return [
            f"{p.name}={p.popen.returncode}"
            for p in self.procs
            if not p.running() and p.killed_at is None and not p.stopping
        ]

    def living(self, prefix: str) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith(prefix) and p.running()]

    def close(self) -> None:
        """Stop everything: SIGKILL to each process group, bounded waits."""
        for proc in self.procs:
            proc.stopping = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)

    def report(self) -> str:
        return "\n".join(
            f"----- {p.name} (pid {p.pid}, exit {p.popen.poll()}) -----\n{p.tail()}"
            for p in self.procs
        )
