"""The machine's durable single-insert limit: pgbench, one client, one INSERT per transaction.

A sequential enqueue can go no faster than one committed transaction after another; this
measures that ceiling on the same server in the same run. The table is shaped like a job's
insert (a text key, a few text columns, a jsonb payload, a timestamp) in a database of its
own, dropped afterwards; ``pgbench -n -c 1 -j 1 -T seconds`` runs the script below with the
server's own settings (``synchronous_commit`` as configured: an fsync per commit by default).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import machine
from bench.procs import BenchError

DB = "conveyor_bench_pgbench"
HOST, USER = "127.0.0.1", "postgres"
TABLE = """CREATE TABLE jobs_like (
    id text PRIMARY KEY, queue text NOT NULL, type text NOT NULL, state text NOT NULL,
    payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"""
SCRIPT = (
    "INSERT INTO jobs_like (id, queue, type, state, payload) VALUES (gen_random_uuid()::text,"
    " 'bench', 'bench_noop', 'queued', '{\"index\": 1, \"enqueued_at\": 1796419597.66}');\n"
)


@dataclass(frozen=True)
class PgbenchFigures:
    seconds: float
    transactions: int
    tps: float
    cpu_busy_before: float | None = None


def _psql(dbname: str, sql: str) -> None:
    psql = shutil.which("psql") or "psql"
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-U", USER, "-d", dbname]
    subprocess.run([*argv, "-c", sql], check=True, capture_output=True, timeout=60)


def measure(seconds: float = 5.0) -> PgbenchFigures:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise BenchError("pgbench not found (postgresql-client)")
    try:
        _psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        _psql("postgres", f"CREATE DATABASE {DB}")
        _psql(DB, TABLE)
        busy = machine.cpu_busy()
        with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
            script = Path(tmp) / "insert.sql"
            script.write_text(SCRIPT)
            argv = [pgbench, "-n", "-c", "1", "-j", "1", "-T", f"{seconds:.0f}", "-f", str(script)]
            done = subprocess.run(
                [*argv, "-h", HOST, "-U", USER, DB],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
                check=False,
            )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"pgbench setup failed: {exc}") from exc
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    count = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
    if done.returncode != 0 or tps is None or count is None:
        raise BenchError(f"pgbench failed ({done.returncode}): {done.stderr[-500:]}")
    return PgbenchFigures(seconds, int(count.group(1)), float(tps.group(1)), busy)
