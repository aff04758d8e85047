"""Subprocess helpers with hard time limits: nothing the harness starts outlives it.

Workers start in a session (process group) of their own, so stopping one stops everything it
forked (Celery's pool children, Dramatiq's worker processes) by that group's id alone, never by
a name. Stopping is SIGTERM to the group, a bounded wait, then SIGKILL to whatever is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and shows the tail of its output."""


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a long-running process (a worker) in its own process group, output to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(proc.pid, sig)  # the group id is the leader's pid (start_new_session)


def stop(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """Stop a spawned process and its whole group: TERM, wait up to ``grace_s``, then KILL."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # then it gets SIGKILL
            proc.wait(timeout=grace_s)
    _signal_group(proc, signal.SIGKILL)  # stragglers whose leader already exited
    try:
        proc.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a zombie that ignores KILL
        raise BenchError(f"process {proc.pid} did not die after SIGKILL") from exc


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_json(argv: Sequence[str], env: Mapping[str, str], timeout_s: float) -> dict[str, Any]:
    """Run a short command to completion (killed at ``timeout_s``) and parse its JSON line."""
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout_s:.0f}s: {' '.join(argv)}") from exc
    out = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not out:
        err = "\n".join(done.stderr.decode(errors="replace").splitlines()[-15:])
        raise BenchError(f"exit {done.returncode}: {' '.join(argv)}\n{err}")
    result = json.loads(out[-1])
    if not isinstance(result, dict):
        raise BenchError(f"expected a JSON object from {' '.join(argv)}, got {out[-1]!r}")
    return result
