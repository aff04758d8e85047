"""The systems under test, behind one interface, and the registry ``bench.run`` picks from.

Every system is driven the same way, so the figures compare like with like:

* enqueueing runs ``python -m bench.peers.client --driver X ...`` as a subprocess (in the peers
  venv for peers, in the project venv for Conveyor) that prints one JSON object;
* workers are the system's own CLI, started as subprocesses in their own process group and
  always stopped (TERM, then KILL) by :meth:`System.stop_workers`;
* every execution is recorded by the job itself in ``BENCH_RUN_DIR`` (see peers/record.py).

Adding a system: subclass :class:`CommandSystem` (three small methods: the client command, the
worker commands, the environment) and add an :class:`Entry` to :data:`REGISTRY`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench import peers_venv
from bench.durable import Probe
from bench.procs import BenchError, run_json, spawn, stop, tail

Mode = Literal["single", "batch"]
REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_TIMEOUT_S = 180.0
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CELERY_REDIS_URL = "redis://127.0.0.1:6379/14"  # a db of its own: purge = FLUSHDB
RQ_REDIS_URL = CELERY_REDIS_URL  # the same benchmark db: one system runs at a time
PROBE_INTERVAL_S = 0.1
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432"


class SystemUnavailable(BenchError):
    """The system cannot be benchmarked here (yet); the message says why."""


@dataclass(frozen=True)
class Trickle:
    """One job at a time: when each enqueue was called, and when it returned (the job
    accepted: Conveyor's commit; a peer's, whatever its client waits for). A worker can be
    woken only after the second; the idle latency counts from the first (bench/measure.py
    `latency`)."""

    enqueued_at: list[float]
    accepted_at: list[float]


@dataclass(frozen=True)
class EnqueueTiming:
    n: int
    seconds: float


class System(ABC):
    """One system under test. Methods are called in this order by ``bench.measure``:
    ``setup``; then per phase ``enqueue``/``trickle``, (``settle``), ``start_workers``,
    ``stop_workers``, ``purge``; finally ``teardown`` (always, even after an error)."""

    name: str = ""
    label: str = ""
    drain_n: int = 20_000  # jobs pre-filled for the drain, sized so it stays within ~60 s

    @abstractmethod
    def settings(self, n_processes: int) -> dict[str, Any]:
        """The settings chosen for this system (reported with the figures)."""

    @abstractmethod
    def versions(self) -> dict[str, Any]:
        """Package and server versions."""

    @abstractmethod
    def setup(self) -> None:
        """Create what the system needs (database, schema, queues), empty."""

    @abstractmethod
    def purge(self) -> None:
        """Drop every pending job; called with the workers stopped."""

    @abstractmethod
    def settle(self) -> None:
        """After the drain's bulk pre-fill, before the workers start: bring the store to the
        state a running deployment is always in (PostgreSQL/SQLite: ANALYZE). Not timed."""

    @abstractmethod
    def start_workers(self, run_dir: Path, n_processes: int = 2) -> None:
        """Start worker processes that record executions in ``run_dir``."""

    @abstractmethod
    def stop_workers(self) -> None:
        """Stop every worker process started; safe to call twice or when none run."""

    @abstractmethod
    def check_workers(self) -> None:
        """Raise :class:`BenchError` if a worker process has died."""

    @abstractmethod
    def enqueue(
        self, n: int, mode: Mode, *, start: int = 0, batch_size: int = 500
    ) -> EnqueueTiming:
        """Enqueue jobs ``start .. start+n-1``, one call each or in batches; time it."""

    @abstractmethod
    def probe(self, n: int, timeout_s: float, log: Path) -> Probe:
        """Start sampling how many of ``n`` drained jobs the store holds as durably done."""

    @abstractmethod
    def worker_pids(self) -> list[int]:
        """The process ids of the running workers' process groups (for RSS sampling)."""

    @abstractmethod
    def trickle(self, n: int, gap_ms: float, *, start: int = 0) -> Trickle:
        """Enqueue one job at a time, ``gap_ms`` apart; when each enqueue was called and
        when it returned."""

    _scratch: Path | None = None

    @property
    def scratch(self) -> Path:
        """A private temporary directory (files, data dirs, logs), made on first use and
        removed by ``teardown``."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        return self._scratch

    def teardown(self) -> None:
        """Stop workers, then purge (the latter best-effort: the run is over); the scratch
        directory goes in any case."""
        try:
            self.stop_workers()
            try:
                self.purge()
            except BenchError as exc:
                print(f"bench: {self.name}: purge at teardown failed: {exc}", file=sys.stderr)
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None


class CommandSystem(System):
    """A system driven through command lines: a JSON client and worker CLIs."""

    def __init__(self) -> None:
        self._workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[Path] = []

    @abstractmethod
    def client_argv(self) -> list[str]:
        """The command of the JSON client, up to (not including) its subcommand."""

    @abstractmethod
    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        """The worker commands to start, one process group each."""

    @abstractmethod
    def extra_env(self) -> dict[str, str]:
        """Environment for both the client and the workers."""

    def pythonpath(self) -> str:
        """Where the client and workers import from: the bench's tree (and its peers)."""
        return str(REPO_ROOT)

    def env(self, run_dir: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONHOME"}}
        env.update(PYTHONPATH=self.pythonpath(), PYTHONUNBUFFERED="1", **self.extra_env())
        if run_dir is not None:
            env["BENCH_RUN_DIR"] = str(run_dir)
        return env

    def _client(self, *args: str, timeout_s: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
        return run_json([*self.client_argv(), *args], self.env(), timeout_s)

    def versions(self) -> dict[str, Any]:
        return self._client("versions", timeout_s=60)

    def setup(self) -> None:
        self._client("setup", timeout_s=120)

    def purge(self) -> None:
        self._client("purge", timeout_s=60)

    def settle(self) -> None:
        self._client("settle", timeout_s=60)

    def enqueue(
        self, n: int, mode: Mode, *, start: int = 0, batch_size: int = 500
    ) -> EnqueueTiming:
        args = ["--n", str(n), "--mode", mode, "--batch-size", str(batch_size)]
        result = self._client("enqueue", *args, "--start", str(start))
        return EnqueueTiming(n=int(result["n"]), seconds=float(result["seconds"]))

    def trickle(self, n: int, gap_ms: float, *, start: int = 0) -> Trickle:
        args = ["--n", str(n), "--gap-ms", str(gap_ms), "--start", str(start)]
        result = self._client("trickle", *args)
        return Trickle(
            [float(t) for t in result["enqueued_at"]], [float(t) for t in result["accepted_at"]]
        )

    def probe(self, n: int, timeout_s: float, log: Path) -> Probe:
        args = ["--n", str(n), "--interval-s", str(PROBE_INTERVAL_S), "--timeout-s", str(timeout_s)]
        return Probe([*self.client_argv(), "probe", *args], self.env(), log)

    def worker_pids(self) -> list[int]:
        """Every live process in the workers' groups (the leaders and what they forked)."""
        groups = {proc.pid for proc in self._workers if proc.poll() is None}
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in groups:  # field 5 of stat: the process group id
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def start_workers(self, run_dir: Path, n_processes: int = 2) -> None:
        if self._workers:
            raise BenchError(f"{self.name}: workers already running")
        env = self.env(run_dir)
        for number, argv in enumerate(self.worker_argvs(n_processes)):
            log = run_dir / f"stdout-{number}.txt"  # not worker-*.log: those are records
            self._logs.append(log)
            self._workers.append(spawn(argv, env, log))

    def check_workers(self) -> None:
        for proc, log in zip(self._workers, self._logs, strict=True):
            if proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: worker exited with {proc.returncode}; its log:\n{tail(log)}"
                )

    def stop_workers(self) -> None:
        workers, self._workers, self._logs = self._workers, [], []
        errors: list[str] = []
        for proc in workers:  # every one is stopped even if another fails to stop
            try:
                stop(proc)
            except BenchError as exc:
                errors.append(str(exc))
        if errors:
            raise BenchError("; ".join(errors))


# ---- peers ---------------------------------------------------------------------------------
class PeerSystem(CommandSystem):
    """A peer installed in ``bench/.venv-peers``; its client is ``bench.peers.client``."""

    driver = ""

    def client_argv(self) -> list[str]:
        return [
            str(peers_venv.venv_bin("python")),
            "-m",
            "bench.peers.client",
            "--driver",
            self.driver,
        ]


class CelerySystem(PeerSystem):
    """Celery, prefork pool, concurrency = CPUs, prefetch multiplier for short tasks."""

    driver = "celery"
    prefetch_multiplier = 64

    def __init__(self, name: str, label: str, broker_url: str, drain_n: int) -> None:
        super().__init__()
        self.name, self.label, self.broker_url, self.drain_n = name, label, broker_url, drain_n

    def settings(self, n_processes: int) -> dict[str, Any]:
        return {
            "workers": f"1 celery worker, prefork pool of {n_processes} processes",
            "concurrency": n_processes,
            "prefetch_multiplier": self.prefetch_multiplier,
            "acks": "early (default)",
            "flags": "--without-mingle --without-gossip",
            "broker": self.broker_url,
        }

    def extra_env(self) -> dict[str, str]:
        return {"BENCH_CELERY_BROKER": self.broker_url}

    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        # One `celery worker` whose prefork pool has n_processes children (= CPUs, Celery's
        # default); the parent process only moves messages.
        return [
            [
                str(peers_venv.venv_bin("celery")),
                *("-A", "bench.peers.celery_app", "worker", "--pool", "prefork"),
                *("--concurrency", str(n_processes), "-Q", "bench_celery"),
                *("--prefetch-multiplier", str(self.prefetch_multiplier)),
                *("--without-mingle", "--without-gossip", "--loglevel", "WARNING"),
                *("--hostname", f"bench-{self.name}@%h"),
            ]
        ]


class DramatiqSystem(PeerSystem):
    """Dramatiq on RabbitMQ: one process per CPU, 8 threads each (its defaults)."""

    driver = "dramatiq"
    name = "dramatiq-rabbitmq"
    label = "Dramatiq + RabbitMQ"
    drain_n = 20_000
    threads = 8

    def settings(self, n_processes: int) -> dict[str, Any]:
        return {
            "workers": f"dramatiq --processes {n_processes} --threads {self.threads}",
            "threads_per_process": self.threads,
            "broker": AMQP_URL,
        }

    def extra_env(self) -> dict[str, str]:
        return {"BENCH_AMQP_URL": AMQP_URL}

    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        return [
            [
                str(peers_venv.venv_bin("dramatiq")),
                "bench.peers.dramatiq_app",
                *("--processes", str(n_processes), "--threads", str(self.threads)),
                *("--queues", "bench_dramatiq"),
            ]
        ]


class ProcrastinateSystem(PeerSystem):
    """Procrastinate: one ``procrastinate worker`` per process, async sub-workers in each."""

    driver = "procrastinate"
    name = "procrastinate"
    label = "Procrastinate (PostgreSQL)"
    drain_n = 10_000
    concurrency = 10
    dsn = f"{PG_ADMIN_URL}/conveyor_bench_procrastinate"

    def settings(self, n_processes: int) -> dict[str, Any]:
        return {
            "workers": f"{n_processes} x procrastinate worker --concurrency {self.concurrency}",
            "concurrency_per_process": self.concurrency,
            "listen_notify": True,
            "dsn": self.dsn,
        }

    def extra_env(self) -> dict[str, str]:
        return {"BENCH_PROCRASTINATE_DSN": self.dsn}

    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        return [
            [
                str(peers_venv.venv_bin("procrastinate")),
                *("--app", "bench.peers.procrastinate_app.app", "--log-level", "warning"),
                "worker",
                *("--queues", "bench_procrastinate", "--concurrency", str(self.concurrency)),
                *("--name", f"bench-{number}"),
            ]
            for number in range(n_processes)
        ]


class HueySystem(PeerSystem):
    """Huey on its SQLite storage: one consumer, a worker process per CPU (peers/huey_app.py)."""

    driver = "huey"
    name = "huey-sqlite"
    label = "Huey + SQLite"
    drain_n = 10_000  # its pre-fill is one committed INSERT per job (no batch API)

    @property
    def db_path(self) -> Path:
        return self.scratch / "huey.db"

    def settings(self, n_processes: int) -> dict[str, Any]:
        return {
            "workers": f"huey_consumer -k process -w {n_processes}",
            "storage": "SqliteHuey defaults (WAL, results stored)",
            "durable": "result stored (Huey deletes the message at dequeue)",
            "db": str(self.db_path),
        }

    def extra_env(self) -> dict[str, str]:
        return {"BENCH_HUEY_DB": str(self.db_path)}

    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        return [
            [
                str(peers_venv.venv_bin("huey_consumer")),
                "bench.peers.huey_app.huey",
                *("-k", "process", "-w", str(n_processes), "-q"),
            ]
        ]


class RqSystem(PeerSystem):
    """RQ on Redis: ``rq worker-pool`` of 2 non-forking workers (peers/rq_app.py)."""

    driver = "rq"
    name = "rq-redis"
    label = "RQ + Redis"
    drain_n = 10_000
    worker_class = "rq.worker.SimpleWorker"

    def settings(self, n_processes: int) -> dict[str, Any]:
        return {
            "workers": f"rq worker-pool -n {n_processes} -w {self.worker_class}",
            "durable": "in the finished registry",
            "redis": RQ_REDIS_URL,
        }

    def extra_env(self) -> dict[str, str]:
        return {"BENCH_RQ_REDIS": RQ_REDIS_URL}

    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        return [
            [
                str(peers_venv.venv_bin("rq")),
                *("worker-pool", "-n", str(n_processes), "-w", self.worker_class),
                *("-u", RQ_REDIS_URL, "-q", "bench_rq"),
            ]
        ]


# ---- registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """A selectable system. While ``enabled()`` is false it is left out of the default list;
    selecting it by name still calls ``factory``, which then raises :class:`SystemUnavailable`."""

    name: str
    factory: Callable[[], System]
    enabled: Callable[[], bool] = lambda: True
    peer: bool = True


RELAXED = "-relaxed"  # the name's suffix of `conveyor-postgres` with relaxed submits


def _conveyor(database: str, relaxed: bool = False) -> Callable[[], System]:
    def make() -> System:
        from bench.conveyor_systems import ConveyorSystem  # imported only when selected

        return ConveyorSystem(database, relaxed=relaxed)

    return make


def conveyor_with_source(name: str, source: Path | None) -> System:
    """``conveyor-sqlite``/``-postgres``(``-relaxed``) running another source tree
    (``--conveyor-src``)."""
    from bench.conveyor_systems import ConveyorSystem

    database = name.removeprefix("conveyor-")
    relaxed = database.endswith(RELAXED)
    return ConveyorSystem(database.removesuffix(RELAXED), source=source, relaxed=relaxed)


def conveyor_databases(names: Sequence[str]) -> tuple[str, ...]:
    """The databases of the Conveyor systems among `names` (a variant counts as its own
    database's: the HTTP and workflow sections run once per database)."""
    ours = (n.removeprefix("conveyor-") for n in names if n.startswith("conveyor-"))
    return tuple(dict.fromkeys(database.removesuffix(RELAXED) for database in ours))


def _conveyor_enabled() -> bool:
    from bench.conveyor_systems import engine_ready

    return engine_ready()


REGISTRY: Mapping[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            "celery-redis",
            lambda: CelerySystem("celery-redis", "Celery + Redis", CELERY_REDIS_URL, 10_000),
        ),
        Entry(
            "celery-rabbitmq",
            lambda: CelerySystem("celery-rabbitmq", "Celery + RabbitMQ", AMQP_URL, 20_000),
        ),
        Entry("dramatiq-rabbitmq", DramatiqSystem),
        Entry("procrastinate", ProcrastinateSystem),
        Entry("huey-sqlite", HueySystem),
        Entry("rq-redis", RqSystem),
        # Conveyor's own systems: see bench/conveyor_systems.py for how they plug in.
        Entry("conveyor-sqlite", _conveyor("sqlite"), enabled=_conveyor_enabled, peer=False),
        Entry("conveyor-postgres", _conveyor("postgres"), enabled=_conveyor_enabled, peer=False),
        Entry(
            "conveyor-postgres-relaxed",
            _conveyor("postgres", relaxed=True),
            enabled=_conveyor_enabled,
            peer=False,
        ),
    )
}


def default_systems() -> list[str]:
    """Every enabled system, Conveyor's first once they are enabled."""
    enabled = [entry for entry in REGISTRY.values() if entry.enabled()]
    return [entry.name for entry in sorted(enabled, key=lambda entry: entry.peer)]


def create(name: str) -> System:
    """Instantiate a registered system by name (raises SystemUnavailable with the reason)."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise SystemUnavailable(f"unknown system {name!r}; known: {', '.join(REGISTRY)}")
    return entry.factory()
