"""Execution records: the one source of truth for what every benchmarked system really ran.

Each execution appends ``"<job_index> <start_time> <end_time>\\n"`` (``time.time()``) to a
per-process file in the directory named by ``BENCH_RUN_DIR``. The file is opened with
``O_APPEND`` and every line goes out in a single unbuffered ``os.write``, so nothing sits in a
buffer: a worker that is killed still leaves every line it wrote, and the harness can count
lost and duplicated jobs from the files alone, whatever the system claims.

Standard library only: the same module is used by the peers (in ``bench/.venv-peers``) and by
Conveyor's benchmark handler (in the project venv).
"""

from __future__ import annotations

import os
import threading
import time

RUN_DIR_ENV = "BENCH_RUN_DIR"

_lock = threading.Lock()
_fd: int | None = None
_fd_pid: int | None = None


def _file() -> int:
    """The descriptor of this process's record file, reopened after a fork (new pid)."""
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is None or _fd_pid != pid:
        run_dir = os.environ[RUN_DIR_ENV]
        path = os.path.join(run_dir, f"worker-{pid}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fd_pid = pid
    return _fd


def record(index: int, started: float) -> None:
    """Append one execution of job ``index`` that started at ``started`` and ends now."""
    ended = time.time()
    line = f"{index} {started:.6f} {ended:.6f}\n".encode()
    with _lock:  # threads (Dramatiq) share the descriptor; one write per line
        os.write(_file(), line)
