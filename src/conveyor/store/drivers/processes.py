"""Is a process on this host still alive? What lets a SQLite lease held by a dead process be
taken over at once instead of after its expiry (sqlite_sessions.LeaseLeadership).

Only a "gone" answer lets a contender take over, so every doubt answers "alive": a holder on
another host, in another PID namespace (a container sharing the database file) or of another
boot is never judged, and without /proc (not Linux) a PID that exists counts as alive. A PID
reused by a newer process is told apart by its start time (/proc/<pid>/stat, field 22); a
zombie (killed, not yet reaped by its parent) is gone.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessId:
    """A process as other processes on its host can recognise it."""

    host: str  # hostname, boot and PID namespace: equal only where PIDs are comparable
    pid: int
    started: str | None  # clock ticks after boot (Linux); None where unknown


@functools.cache
def host_key() -> str:
    """Hostname, boot id and PID namespace: two processes see each other's PIDs only when
    all three match (a rebooted host, or a container of the same name, differs)."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text())
        except OSError:
            parts.append("-")
    return "|".join(part.strip() for part in parts)[:255]


def this_process() -> ProcessId:
    pid = os.getpid()
    return ProcessId(host_key(), pid, _stat(pid)[1] if _PROC.is_dir() else None)


def is_gone(holder: ProcessId) -> bool:
    """True only when `holder` certainly no longer runs (see the module's docstring)."""
    if holder.host != host_key() or holder.pid <= 0:
        return False
    if _PROC.is_dir():
        state, started = _stat(holder.pid)
        if state is None:
            return True  # no such process
        if state in ("Z", "X"):
            return True  # killed, waiting for its parent to reap it
        return holder.started is not None and started != holder.started  # PID reused
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, another user's
    return False


def _stat(pid: int) -> tuple[str | None, str | None]:
    """(state, start time) from /proc/<pid>/stat; (None, None) when there is no such process.
    The command name (field 2) may hold spaces and parentheses: split after its last `)`."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None, None
    except OSError:
        return "?", None  # unreadable: counts as alive
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)
