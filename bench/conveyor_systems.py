"""Conveyor's own systems: ``conveyor-sqlite`` and ``conveyor-postgres`` (and
``conveyor-postgres-relaxed``: the same with ``CONVEYOR_SUBMIT_SYNCHRONOUS_COMMIT=off``, its
enqueues and idle latency only).

NotImplemented until the engine lands. Until :data:`ENGINE_READY` is flipped to ``True`` (or
``BENCH_CONVEYOR=1`` is set to try an unfinished engine locally), both systems are left out of
the default list and selecting one by name raises :class:`SystemUnavailable`; no Conveyor
figure is ever reported that was not measured.

How they plug in (the precise interface, shared with the peers):

* **worker**: ``conveyor worker --queues bench --concurrency C --handlers
  bench.conveyor_handlers``, ``n_processes`` times, each its own process group, environment
  ``CONVEYOR_DATABASE_URL``, ``CONVEYOR_HANDLER_MODULES=bench.conveyor_handlers``,
  ``CONVEYOR_LOG_FILE``/``CONVEYOR_DATA_DIR`` in the run's temporary directory and
  ``BENCH_RUN_DIR`` (where the handler records executions). ``C`` is Conveyor's default,
  CPUs x 4 (DESIGN.md, ``WORKER_CONCURRENCY``).
* **job type**: ``bench_noop`` on queue ``bench`` (bench/conveyor_handlers.py), payload
  ``{"index": int, "enqueued_at": float}``, calling ``bench.peers.record.record`` like the peers.
* **enqueue client**: ``python -m bench.peers.client --driver conveyor ...`` in the project venv,
  i.e. bench/conveyor_driver.py's ``Driver``: ``setup`` (fresh migrated database), ``purge``,
  ``send_single`` (one ``JobService.submit`` per job), ``send_batch`` (``submit_many``),
  ``versions``/``server_version``.

Source tree: the client, workers and API import Conveyor from ``<source>/src`` (PYTHONPATH
first): this tree by default, another with ``python -m bench.run --conveyor-src PATH`` (an A/B
of two trees with the same harness); the tree's commit is reported with the settings.

To enable: make sure ``python -m bench.peers.client --driver conveyor setup`` and a
``conveyor worker`` work with the environment above, set ``ENGINE_READY = True``, run
``python -m bench.run --systems conveyor-sqlite,conveyor-postgres --quick``, then the full run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.systems import PG_ADMIN_URL, RELAXED, REPO_ROOT, CommandSystem, SystemUnavailable

ENGINE_READY = True
ENABLE_ENV = "BENCH_CONVEYOR"
DRAIN_N = 20_000


def engine_ready() -> bool:
    """True once Conveyor's systems may run: the flag above, or ``BENCH_CONVEYOR=1``."""
    return ENGINE_READY or os.environ.get(ENABLE_ENV) == "1"


def source_commit(source: Path) -> str:
    """``git describe``-like identity of a source tree: its HEAD and whether it is dirty."""
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+dirty" if dirty else "")


class ConveyorSystem(CommandSystem):
    """Conveyor on SQLite (one file, in a temporary directory) or on PostgreSQL."""

    drain_n = DRAIN_N

    def __init__(self, database: str, source: Path | None = None, relaxed: bool = False) -> None:
        if not engine_ready():
            raise SystemUnavailable(
                f"conveyor-{database}: NotImplemented until the engine lands "
                f"(set ENGINE_READY in bench/conveyor_systems.py, or {ENABLE_ENV}=1 to try)"
            )
        if database not in {"sqlite", "postgres"}:
            raise SystemUnavailable(f"conveyor-{database}: unknown database")
        super().__init__()
        self.database = database
        self.name = f"conveyor-{database}"
        self.label = f"Conveyor ({'SQLite' if database == 'sqlite' else 'PostgreSQL'})"
        # CONVEYOR_SUBMIT_SYNCHRONOUS_COMMIT=off (PostgreSQL): the opt-in faster submit
        # (docs/design.md "Relaxed submit commits"), measured beside the peers' enqueues.
        # Only the submits change, so its drain is not run again (`measures_drain`).
        self.relaxed = relaxed
        if relaxed:
            if database != "postgres":
                raise SystemUnavailable(f"conveyor-{database}: relaxed submits are PostgreSQL's")
            self.name += RELAXED
            self.label = "Conveyor (PostgreSQL, relaxed submits)"
        self.measures_drain = not relaxed
        # The Conveyor the client, workers and API import: this tree's src/ unless
        # --conveyor-src names another tree (an A/B with the same harness).
        self.source = (source or REPO_ROOT).resolve()
        if source is not None:
            self.label += f" @{self.source.name}"
            self.name += f"@{self.source.name}"
        if not (self.source / "src" / "conveyor").is_dir():
            raise SystemUnavailable(f"{self.name}: no src/conveyor in {self.source}")
        # The README's advice for many short async jobs: a high in-flight count per process,
        # so claims and finishes travel in large batches (WORKER_CONCURRENCY defaults to
        # CPUs x 4, sized for jobs that do real work).
        self.concurrency = 64

    @property
    def database_url(self) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self.scratch / 'bench.db'}"
        # BENCH_PG_DATABASE: two benches at once on one server must not share (each drops
        # and creates its database at setup).
        return f"{PG_ADMIN_URL}/{os.environ.get('BENCH_PG_DATABASE', 'conveyor_bench')}"

    def settings(self, n_processes: int) -> dict[str, Any]:
        return {
            "workers": f"{n_processes} x conveyor worker --concurrency {self.concurrency}",
            "concurrency_per_process": self.concurrency,
            "database_url": self.database_url,
            "source": str(self.source),
            "commit": source_commit(self.source),
        }

    def pythonpath(self) -> str:
        """The chosen tree's src/ first, then the bench's own tree (bench.* modules)."""
        return os.pathsep.join(dict.fromkeys([str(self.source / "src"), str(REPO_ROOT)]))

    @property
    def conveyor(self) -> str:
        """The project venv's ``conveyor`` script (it imports from PYTHONPATH first)."""
        return shutil.which("conveyor", path=str(Path(sys.executable).parent)) or "conveyor"

    def client_argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.peers.client", "--driver", "conveyor"]

    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        return [
            [
                self.conveyor,
                *("worker", "--queues", "bench", "--concurrency", str(self.concurrency)),
                *("--handlers", "bench.conveyor_handlers"),
            ]
            for _ in range(n_processes)
        ]

    def extra_env(self) -> dict[str, str]:
        return {
            "CONVEYOR_DATABASE_URL": self.database_url,
            "CONVEYOR_HANDLER_MODULES": "bench.conveyor_handlers",
            "CONVEYOR_DATA_DIR": str(self.scratch / "data"),
            "CONVEYOR_LOG_FILE": str(self.scratch / "conveyor.log"),
            "CONVEYOR_LOG_LEVEL": "WARNING",
            "CONVEYOR_SUBMIT_SYNCHRONOUS_COMMIT": "false" if self.relaxed else "true",
        }
