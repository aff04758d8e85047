"""Start real `conveyor` processes against a test database, and always stop them.

Every process gets its own output file (stdout and stderr together) under the test's tmp
directory; `Cluster.report()` gathers them so a failing test shows what each process said.
Processes are stopped by their own pid (SIGCONT first, in case a test paused one, then
SIGKILL), with bounded waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.handlers import RECORD_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))
HANDLERS = "tests.support.handlers"
# This tree's src/ first, so a child runs the code under test even when the venv's editable
# install points at another checkout (a git worktree); the root for tests.support.
CHILD_PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])


def clean_environ() -> dict[str, str]:
    """This process's environment without any CONVEYOR_ setting (the test decides them all)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}


@dataclass(frozen=True)
class Run:
    """One line of the handlers' records: one start (or end) of one attempt."""

    job_id: str
    attempt: int
    pid: int


def read_runs(directory: Path, event: str) -> list[Run]:
    """Every `start` or `end` record written by every process, in no particular order."""
    runs: list[Run] = []
    for path in sorted(directory.glob(f"{event}-*.log")):
        for line in path.read_text().splitlines():
            job_id, attempt, pid = line.split()
            runs.append(Run(job_id, int(attempt), int(pid)))
    return runs


class Proc:
    """A `conveyor` subprocess and the file its output goes to."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], out: Path) -> None:
        self.name = name
        self.popen = popen
        self.out = out

    @property
    def pid(self) -> int:
        return self.popen.pid

    def owns(self, worker_id: str | None) -> bool:
        """Whether a job's `worker_id` (`host-pid-suffix`) names this process."""
        return worker_id is not None and f"-{self.pid}-" in worker_id

    def output(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def running(self) -> bool:
        return self.popen.poll() is None

    async def wait_exit(self, timeout: float) -> int:
        """The exit code; fails the test if the process is still running after `timeout`."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} (pid {self.pid}) still running after {timeout}s")
            await asyncio.sleep(0.05)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    self.popen.send_signal(sig)
                except ProcessLookupError:  # pragma: no cover - it just exited
                    break
        with contextlib.suppress(subprocess.TimeoutExpired):  # a zombie that ignores KILL
            self.popen.wait(timeout=10)


def start(name: str, argv: list[str], *, cwd: Path, env: Mapping[str, str], out: Path) -> Proc:
    """`argv` started in a session of its own (a Ctrl-C of pytest does not reach it), its
    stdout and stderr together in `out`."""
    with out.open("wb") as sink:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, out)


class Cluster:
    """The processes of one test, all sharing one database and one record directory."""

    def __init__(self, db_url: str, workdir: Path) -> None:
        self.db_url = db_url
        self.records = workdir / "records"
        self.logs = workdir / "logs"
        self.records.mkdir(parents=True)
        self.logs.mkdir(parents=True)
        self.procs: list[Proc] = []

    def env(self, name: str, settings: Mapping[str, str]) -> dict[str, str]:
        env = clean_environ()
        env.update(
            PYTHONPATH=CHILD_PYTHONPATH,
            PYTHONUNBUFFERED="1",
            CONVEYOR_DATABASE_URL=self.db_url,
            CONVEYOR_HANDLER_MODULES=HANDLERS,
            CONVEYOR_LOG_FILE=str(self.logs / f"{name}.app.log"),
        )
        env[RECORD_DIR_ENV] = str(self.records)
        env.update({f"CONVEYOR_{key.upper()}": value for key, value in settings.items()})
        return env

    def spawn(self, name: str, args: list[str], settings: Mapping[str, str]) -> Proc:
        out = self.logs / f"{name}.out"
        proc = start(name, [CONVEYOR, *args], cwd=ROOT, env=self.env(name, settings), out=out)
        self.procs.append(proc)
        return proc

    def worker(
        self,
        name: str,
        *,
        concurrency: int = 4,
        queues: str = "default",
        burst: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> Proc:
        """`settings`: CONVEYOR_ settings by lower-case name without the prefix."""
        args = ["worker", "--queues", queues, "--concurrency", str(concurrency)]
        return self.spawn(name, [*args, "--burst"] if burst else args, settings or {})

    def scheduler(self, name: str = "scheduler", settings: Mapping[str, str] | None = None) -> Proc:
        return self.spawn(name, ["scheduler"], settings or {})

    def runs(self, event: str) -> list[Run]:
        return read_runs(self.records, event)

    def report(self) -> str:
        parts = []
        for proc in self.procs:
            code = proc.popen.poll()
            parts.append(f"----- {proc.name} (pid {proc.pid}, exit {code}) -----\n{proc.output()}")
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float,
    what: str,
    every: float = 0.05,
) -> None:
    """Poll `check` (sync or async) until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


def wait_ready(base: str, running: Callable[[], bool], *, timeout: float) -> None:
    """Poll `base`/ready until it answers 200; fail at once if the server process stops
    (`running` turns false), or after `timeout` s."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=5, trust_env=False) as http:
        while True:
            assert running(), f"the server at {base} exited before it was ready"
            try:
                if http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no 200 from {base}/ready in {timeout}s"
            time.sleep(0.2)


def stopped(pid: int) -> bool:
    """Whether the kernel reports the process as stopped (SIGSTOP took effect)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")
