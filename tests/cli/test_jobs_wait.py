"""`conveyor enqueue --wait` in a subprocess, with a real worker process: it follows the job's
events in the outbox, shows a progress bar, and exits 0 when the job completed, 1 if not."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.domain.states import JobState
from conveyor.store.factory import open_backend
from tests.support.processes import CONVEYOR, ROOT, Cluster

pytestmark = pytest.mark.slow


async def queued(db_url: str) -> bool:
    """Whether the database holds a queued job (the test's one)."""
    backend = open_backend(db_url)
    try:
        return any(c.state is JobState.QUEUED and c.count for c in await backend.counts())
    finally:
        await backend.close()


def as_in_a_terminal() -> None:
    """Ctrl-C's default action, as a terminal's foreground command has it. A test run started
    in the background by a non-interactive shell ignores SIGINT, and every child inherits
    that (POSIX): then `enqueue --wait` rightly ignores the signal too, and this test hung."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stuck(process: subprocess.Popen[str]) -> str:
    """What a process that ignored SIGINT was doing: its signal masks, and every thread's
    stack (faulthandler, on SIGABRT)."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    masks = [line for line in status.splitlines() if line.startswith(("SigIgn", "SigCgt"))]
    process.send_signal(signal.SIGABRT)
    _out, err = process.communicate(timeout=20)
    return f"{masks}\n{err[-6000:]}"


def enqueue_and_wait(
    cluster: Cluster, tmp_path: Path, payload: str
) -> tuple[int, dict[str, Any], str]:
    settings = {"data_dir": str(tmp_path / "data"), "secret_key": "k" * 40}
    done = subprocess.run(
        [CONVEYOR, "enqueue", "sleep", "--payload", payload, "--max-attempts", "1", "--wait"],
        cwd=ROOT, env=cluster.env("enqueue", settings), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def test_enqueue_wait_exits_0_on_completion_and_1_on_failure(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.worker("worker", queues="*")
    code, final, shown = enqueue_and_wait(cluster, tmp_path, '{"seconds": 0.6, "steps": 3}')
    assert code == 0, shown
    assert final["state"] == "completed" and final["result"] == {"slept": 0.6, "attempt": 1}
    assert "100%" in shown  # the progress bar went to stderr

    code, final, _ = enqueue_and_wait(cluster, tmp_path, '{"seconds": 0, "fail": true}')
    assert code == 1
    assert final["state"] == "failed" and "asked to fail" in final["error"]["message"]


def test_ctrl_c_while_waiting_leaves_quietly(cluster: Cluster, tmp_path: Path) -> None:
    """Ctrl-C once the job is submitted and being followed. It used to come after a fixed
    3 s, which on a loaded machine could land while the command was still importing (a
    KeyboardInterrupt traceback, not this command's doing): now after the job is stored."""
    settings = {"data_dir": str(tmp_path / "data"), "secret_key": "k" * 40}
    waiting = subprocess.Popen(  # no worker: the job stays queued
        [CONVEYOR, "enqueue", "noop", "--wait"], cwd=ROOT,
        env={**cluster.env("enqueue", settings), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not asyncio.run(queued(cluster.db_url)):
            assert time.monotonic() < deadline and waiting.poll() is None, "never stored"
            time.sleep(0.2)
        time.sleep(1)  # from the commit to following the outbox: local work only
        waiting.send_signal(signal.SIGINT)
        try:
            _out, err = waiting.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 60 s after SIGINT: {stuck(waiting)}") from None
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate(timeout=10)
    assert waiting.returncode == 130 and "Traceback" not in err, err
