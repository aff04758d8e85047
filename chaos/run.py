"""Entry point of ``make chaos``: ``python -m chaos.run [--only a,b] [--db sqlite,postgres]``.

Starts a private PostgreSQL cluster (initdb in a temporary directory, as the ``postgres``
system user; removed at the end), runs every scenario on each database it applies to, one
after the other, and prints one table. ``--pg-admin URL`` uses an existing server instead
(databases are created and dropped there; the restart scenario is then skipped). The
failover scenario always starts a primary and a standby of its own. Exit
status: 0 when every row passed, 1 when any row failed (a loss, a stuck job, a duplicate no
fault explains, an unexpected process exit, an answer over the bound, work that never
resumed, or a scenario that broke), 2 for a bad selection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from chaos.pgcluster import PrivateCluster
from chaos.scenarios import (
    Scenario,
    Where,
    failover,
    leader_kills,
    limited_kills,
    loop_block,
    outage,
    pool_crash,
    worker_kills,
)
from chaos.verdict import Row
from chaos.workflows import workflow_cuts


@dataclass(frozen=True)
class Plan:
    """One scenario on one database."""

    name: str
    kind: str
    run: Scenario


def plans(kills_pg: int, kills_sqlite: int, outage_s: float) -> list[Plan]:
    """Everything, in the order it runs (cheap and informative first)."""
    cut = functools.partial(outage, fault="cut", seconds=outage_s)
    part = functools.partial(outage, fault="partition", seconds=outage_s)
    restart = functools.partial(outage, fault="restart")
    return [
        Plan("worker-kills", "postgres", functools.partial(worker_kills, kills=kills_pg)),
        Plan("worker-kills", "sqlite", functools.partial(worker_kills, kills=kills_sqlite)),
        Plan("limited", "postgres", limited_kills),
        Plan("limited", "sqlite", limited_kills),
        Plan("leader-kills", "postgres", leader_kills),
        Plan("leader-kills", "sqlite", leader_kills),
        Plan("db-cut", "postgres", cut),
        Plan("partition", "postgres", part),
        Plan("pg-restart", "postgres", restart),
        Plan("workflow-cut", "postgres", workflow_cuts),
        Plan("failover", "postgres", failover),
        Plan("pool-crash", "postgres", pool_crash),
        Plan("pool-crash", "sqlite", pool_crash),
        Plan("loop-block", "postgres", loop_block),
        Plan("loop-block", "sqlite", loop_block),
    ]


COLUMNS = (
    ("scenario", 13),
    ("db", 8),
    ("jobs", 6),
    ("faults", 40),
    ("lost", 4),
    ("dup (unexpl.)", 13),
    ("stuck", 5),
    ("exits", 22),
    ("slowest", 8),
    ("recovery", 8),
    ("verdict", 7),
)


def _seconds(value: float | None, measured: bool = True) -> str:
    if not measured:
        return "-"
    return "never" if value is None else f"{value:.1f} s"


def cells(row: Row) -> list[str]:
    slowest = "-" if row.answer_bound is None else _seconds(row.slowest_answer)
    return [
        row.scenario,
        row.db,
        str(row.jobs),
        row.faults or "-",
        str(row.lost),
        f"{row.duplicates} ({row.unexplained})",
        str(row.stuck),
        ", ".join(row.exits) or "0",
        slowest,
        _seconds(row.recovery, row.recovery_measured),
        "ok" if row.passed else "FAIL",
    ]


def table(rows: list[Row]) -> str:
    lines = [" | ".join(name.ljust(width) for name, width in COLUMNS)]
    lines.append("-+-".join("-" * width for _, width in COLUMNS))
    for row in rows:
        values = cells(row)
        lines.append(" | ".join(v.ljust(w) for v, (_, w) in zip(values, COLUMNS, strict=True)))
    notes = [f"{r.scenario}/{r.db}: {'; '.join(r.failures() + r.notes)}" for r in rows]
    return "\n".join([*lines, "", *[n for n in notes if not n.endswith(": ")]])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__)
    parser.add_argument("--only", help="comma-separated scenario names (default: all)")
    parser.add_argument("--db", default="postgres,sqlite", help="comma-separated databases")
    parser.add_argument("--kills-pg", type=int, default=55, help="worker SIGKILLs on PostgreSQL")
    parser.add_argument("--kills-sqlite", type=int, default=50, help="worker SIGKILLs on SQLite")
    parser.add_argument("--outage", type=float, default=10.0, help="cut/partition seconds")
    parser.add_argument("--lease", type=float, default=3.0, help="CONVEYOR_LEASE_SECONDS")
    parser.add_argument("--pg-admin", help="an existing server's admin URL (no private cluster)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    return parser


def keep_run_dir(asked: bool, rows: Sequence[Row], chosen: int) -> bool:
    """Keep the records, faults and logs when asked, and whenever a scenario failed or did
    not finish: a failure's evidence (who ran a job twice, and when) is in them."""
    return asked or len(rows) < chosen or not all(r.passed for r in rows)


@contextlib.contextmanager
def postgres(admin: str | None, wanted: bool) -> Iterator[tuple[str | None, PrivateCluster | None]]:
    if admin or not wanted:
        yield admin, None
        return
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster.admin_url, cluster
    finally:
        cluster.stop()


async def run_one(plan: Plan, where: Where) -> Row:
    started = time.monotonic()
    try:
        row = await plan.run(where, plan.kind)
    except Exception as exc:
        row = Row(plan.name, plan.kind, error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    row.notes.append(f"{time.monotonic() - started:.0f} s")
    return row


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chosen = [
        p
        for p in plans(args.kills_pg, args.kills_sqlite, args.outage)
        if (not args.only or p.name in args.only.split(",")) and p.kind in args.db.split(",")
    ]
    if not chosen:
        print("nothing selected", file=sys.stderr)
        return 2
    if args.pg_admin:
        chosen = [p for p in chosen if p.name != "pg-restart"]
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
    started = time.monotonic()
    rows: list[Row] = []
    try:
        wanted = any(p.kind == "postgres" and p.name != "failover" for p in chosen)
        with postgres(args.pg_admin, wanted) as (admin, cluster):
            where = Where(workdir, admin, args.lease, cluster)
            for plan in chosen:
                print(f"chaos: {plan.name} on {plan.kind} ...", file=sys.stderr, flush=True)
                rows.append(asyncio.run(run_one(plan, where)))
                print(table(rows[-1:]).splitlines()[2], file=sys.stderr, flush=True)
    finally:
        if keep_run_dir(args.keep, rows, len(chosen)):
            print(f"chaos: run directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(table(rows))
    print(f"\n{len(rows)} scenarios in {time.monotonic() - started:.0f} s; load {load}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
