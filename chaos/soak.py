"""``make soak``: mixed load for a long while, every process's memory sampled, one verdict.

``python -m chaos.soak [--minutes 30] [--db postgres|sqlite|both] [--sample-seconds 10]``
starts real processes (`conveyor api`, two `worker`s, `scheduler`, `results`) on a fresh
database (PostgreSQL: a private cluster, as ``make chaos``; ``--pg-admin URL`` uses an
existing server), puts the load of `chaos.soakload` on them through the API (paced single
submits, batches, jobs of 1 ms to 1 s of which some fail and retry, three cron schedules of
one to five seconds, SSE clients, a webhook subscription to a loopback receiver) and every
``--sample-seconds`` samples each process's RSS (its whole session: pool children count
with their worker), its ``/metrics`` series, submit and end-to-end latency in the window,
the queue's depth by state, throughput, errors and the load average. Completed jobs are
pruned after a minute, as a long-running deployment would, so the database stays the
same size and a growth is the processes'.

At the end the load stops, the schedules are paused, the queue drains, and the run is
judged (`judge`): RSS flat after the warm-up, p99 not trending up, queue depth bounded,
nothing lost, run twice, dead-lettered or undelivered, no error, no process exit. Exit
status 0 when every database's run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import httpx

from chaos.client import Api
from chaos.fleet import Proc
from chaos.pgcluster import PrivateCluster, free_port
from chaos.receiver import Receiver
from chaos.soakload import Load, Window
from chaos.soakstats import median, percentile, series_count, session_rss_mib, slope_per_hour
from chaos.stage import Stage, stage

METRICS_TOKEN = "soak-metrics-scrape-token-0123456789abcdef"
SIDE_EMAIL, SIDE_PASSWORD = "soak-side@example.com", "soak-side-password-123"
# (name, cron, period in seconds): croniter's sixth field is the second
SCHEDULES = (
    ("every second", "* * * * * *", 1),
    ("every 2 s", "* * * * * */2", 2),
    ("every 5 s", "* * * * * */5", 5),
)
SOAK_SETTINGS = {
    "handler_modules": "chaos.handlers,chaos.soak_handlers",
    "prune_completed_after": "60",  # a steady-state table: growth is the processes', not rows
    "events_retention_seconds": "600",
    "webhook_retention_seconds": "600",
    "metrics_refresh_interval": "5",
    "metrics_token": METRICS_TOKEN,
}
# The verdict's bounds (docs/operations.md, "Soak")
RSS_GROWTH_MIB = 10.0  # RSS flat: growth after the warm-up at most this ...
RSS_GROWTH_SHARE = 0.10  # ... or this share of the post-warm-up size, whichever is larger
P99_FACTOR, SUBMIT_SLACK_S, E2E_SLACK_S = 2.0, 0.1, 0.5  # last third <= factor x first + slack
SERIES_GROWTH, SERIES_SLACK = 1.1, 20  # /metrics samples: last <= 1.1 x post-warm-up + 20
DEPTH_SECONDS = 30.0  # backlog never above this many seconds of submissions
DRAIN_S = 240.0
STREAM_CATCH_UP_S = 30.0
CRON_SLACK = 2  # fires a schedule may miss at the edges of the run
EDGE_SAMPLES = 3  # samples whose median is the post-warm-up and the final RSS


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mib: dict[str, float]  # process name -> RSS of its session
    procs: dict[str, int]  # process name -> processes in its session
    series: dict[str, int]  # process name -> samples on its /metrics (-1: no answer)
    submit_p50: float | None
    submit_p99: float | None
    e2e_p50: float | None
    e2e_p99: float | None
    batch_p99: float | None
    submitted: int
    completed: int
    events: int
    followed: int
    depth: dict[str, int]  # state -> jobs (non-terminal states only)
    errors: int
    load1: float

    @property
    def backlog(self) -> int:
        return sum(self.depth.values())


@dataclass
class Outcome:
    """What the end of the run found (the total-queue check and its friends)."""

    acked: int = 0
    unknown: int = 0
    lost: int = 0
    duplicates: int = 0
    dead: int = 0  # dead-lettered (state failed) although every job can succeed
    stuck: int = 0  # not terminal after the drain
    sse_missed: int = 0  # main jobs whose completed event never came on the stream
    webhooks_missing: int = 0
    cron: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (fired, expected)
    exits: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)  # answered 503 (or not), then sent again
    drain_s: float = 0.0


@dataclass
class Report:
    db: str
    minutes: float
    rate: float
    sample_seconds: float
    warmup_s: float
    samples: list[Sample]
    outcome: Outcome
    failures: list[str] = field(default_factory=list)
    table: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


# ---- setup -----------------------------------------------------------------------------------
async def sign_in(url: str, email: str, password: str) -> Api:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        body = {"email": email, "password": password}
        created = await http.post("/api/v1/auth/register", json=body)
        if created.status_code not in (200, 201, 202, 409):
            created.raise_for_status()
        login = await http.post("/api/v1/auth/login", json=body)
        login.raise_for_status()
        return Api(url, str(login.json()["access_token"]))


async def with_api_key(api: Api) -> Api:
    """The same account with an API key: a 30-minute run outlives an access token."""
    async with api.client(60) as http:
        answer = await http.post("/api/v1/me/api-keys", json={"name": "soak"})
        answer.raise_for_status()
        return Api(api.url, str(answer.json()["key"]))


async def create_schedules(side: Api) -> list[str]:
    ids = []
    async with side.client(60) as http:
        for number, (name, cron, _period) in enumerate(SCHEDULES):
            body = {
                "name": name,
                "cron": cron,
                "type": "soak.tick",
                "payload": {"schedule": number},
            }
            answer = await http.post("/api/v1/schedules", json=body)
            answer.raise_for_status()
            ids.append(str(answer.json()["id"]))
    return ids


async def pause_schedules(side: Api, ids: Sequence[str]) -> None:
    async with side.client(60) as http:
        for schedule_id in ids:
            (await http.post(f"/api/v1/schedules/{schedule_id}/pause")).raise_for_status()


def spawn_fleet(s: Stage, workers: int, concurrency: int) -> dict[str, int]:
    """Workers, a scheduler and a relay, each with a /metrics port; name -> port."""
    ports: dict[str, int] = {}
    commands = [
        (s.serial("worker"), ["worker", "--queues", "default", "--concurrency", str(concurrency)])
        for _ in range(workers)
    ]
    commands += [(s.serial("scheduler"), ["scheduler"]), (s.serial("relay"), ["results"])]
    for name, args in commands:
        port = free_port()
        s.fleet.spawn(name, [*args, "--metrics-port", str(port)])
        ports[name] = port
    return ports


# ---- sampling --------------------------------------------------------------------------------
class Depth:
    """Jobs per non-terminal state, read straight from the database (one connection)."""

    SQL = (
        "SELECT state, count(*) FROM jobs WHERE state NOT IN "
        "('completed', 'failed', 'cancelled') GROUP BY state"
    )

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url
        self._pg: asyncpg.Connection | None = None

    async def read(self) -> dict[str, int]:
        if self.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite, self.SQL)
        if self._pg is None:
            self._pg = await asyncpg.connect(self.url, timeout=30)
        return {str(state): int(n) for state, n in await self._pg.fetch(self.SQL)}

    async def dead(self) -> int:
        sql = "SELECT count(*) FROM jobs WHERE state = 'failed'"
        if self.kind == "sqlite":
            return sum((await asyncio.to_thread(self._sqlite, sql)).values())
        if self._pg is None:
            self._pg = await asyncpg.connect(self.url, timeout=30)
        return int(await self._pg.fetchval(sql))

    def _sqlite(self, sql: str) -> dict[str, int]:
        conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30)
        try:
            rows = list(conn.execute(sql))
        finally:
            conn.close()
        if len(rows) == 1 and len(rows[0]) == 1:
            return {"": int(rows[0][0])}
        return {str(state): int(n) for state, n in rows}

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()


class Sampler:
    def __init__(self, procs: Sequence[Proc], metrics: dict[str, str], depth: Depth) -> None:
        self.procs = list(procs)
        self.metrics = metrics  # process name -> its /metrics URL
        self.depth = depth
        self.samples: list[Sample] = []

    async def series(self, http: httpx.AsyncClient) -> dict[str, int]:
        counts: dict[str, int] = {}
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        for name, url in self.metrics.items():
            try:
                answer = await http.get(url, headers=headers)
                counts[name] = series_count(answer.text) if answer.status_code == 200 else -1
            except httpx.HTTPError:
                counts[name] = -1
        return counts

    async def take(self, t: float, window: Window, errors: int, http: httpx.AsyncClient) -> Sample:
        rss = await asyncio.to_thread(session_rss_mib, [p.pid for p in self.procs])
        try:
            depth = await asyncio.wait_for(self.depth.read(), 30)
        except (TimeoutError, OSError, asyncpg.PostgresError, sqlite3.Error):
            depth = {"unread": -1}
        sample = Sample(
            t=round(t, 1),
            rss_mib={p.name: round(rss[p.pid][0], 1) for p in self.procs},
            procs={p.name: rss[p.pid][1] for p in self.procs},
            series=await self.series(http),
            submit_p50=percentile(window.submit_s, 50),
            submit_p99=percentile(window.submit_s, 99),
            e2e_p50=percentile(window.e2e_s, 50),
            e2e_p99=percentile(window.e2e_s, 99),
            batch_p99=percentile(window.batch_s, 99),
            submitted=window.submitted,
            completed=window.completed,
            events=window.events,
            followed=window.followed,
            depth=depth,
            errors=errors,
            load1=os.getloadavg()[0],
        )
        self.samples.append(sample)
        return sample


def progress(sample: Sample, every: float) -> str:
    rss = " ".join(f"{name}={mib:.0f}" for name, mib in sample.rss_mib.items())
    return (
        f"soak t={sample.t:6.0f}s in={sample.submitted / every:5.0f}/s "
        f"done={sample.completed / every:5.0f}/s submit p99={_ms(sample.submit_p99)} "
        f"e2e p99={_ms(sample.e2e_p99)} backlog={sample.backlog} errors={sample.errors} "
        f"load={sample.load1:.1f} rss MiB: {rss}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


# ---- the end: drain and count ------------------------------------------------------------------
def read_records(directory: Path) -> tuple[Counter[int], dict[int, set[str]], set[str]]:
    """(successful ends per index, tick job ids per schedule, job ids that ended or ticked)."""
    ends: Counter[int] = Counter()
    ticks: dict[int, set[str]] = defaultdict(set)
    done: set[str] = set()
    for path in directory.glob("exec-*.log"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 6:
                continue
            if parts[0] == "end":
                ends[int(parts[1])] += 1
                done.add(parts[2])
            elif parts[0] == "tick":
                ticks[int(parts[1])].add(parts[2])
                done.add(parts[2])
    return ends, ticks, done


async def drain(load: Load, depth: Depth, s: Stage) -> float:
    """Until nothing is left to run and the main stream has seen every completion (given
    `STREAM_CATCH_UP_S` once the queue is empty: a completion it never shows is a finding)."""
    started = time.monotonic()
    empty_since: float | None = None
    while time.monotonic() - started < DRAIN_S:
        backlog = sum((await depth.read()).values())
        if backlog == 0:
            empty_since = empty_since or time.monotonic()
            if not load.pending or time.monotonic() - empty_since > STREAM_CATCH_UP_S:
                break
        else:
            empty_since = None
        if not s.fleet.living("worker"):
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - started


async def count_outcome(
    s: Stage, load: Load, depth: Depth, receiver: Receiver, cron_s: float
) -> Outcome:
    out = Outcome(acked=len(load.acked), unknown=load.unknown)
    out.stuck = sum((await depth.read()).values())
    out.dead = await depth.dead()
    ends, ticks, done = await asyncio.to_thread(read_records, s.fleet.records)
    out.lost = sum(1 for index in load.acked if ends[index] == 0)
    out.duplicates = sum(1 for n in ends.values() if n > 1)
    out.sse_missed = len(load.pending)
    hooked = set(load.side_jobs) | {j for ids in ticks.values() for j in ids}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        missing = [j for j in hooked if j in done and not receiver.received(j)]
        if not missing:
            break
        await asyncio.sleep(1.0)
    out.webhooks_missing = len(missing)
    for number, (name, _cron, period) in enumerate(SCHEDULES):
        out.cron[name] = (len(ticks.get(number, ())), int(cron_s // period))
    out.exits = s.fleet.unexpected_exits()
    out.errors = dict(load.errors)
    out.retried = dict(load.retried)
    return out


# ---- the verdict -------------------------------------------------------------------------------
def after_warmup(samples: Sequence[Sample], warmup_s: float) -> list[Sample]:
    return [x for x in samples if x.t > warmup_s]


def rss_growth(samples: Sequence[Sample], name: str) -> tuple[float, float] | None:
    """(post-warm-up RSS, growth to the end) in MiB: medians of the edge samples."""
    if len(samples) < 2 * EDGE_SAMPLES:
        return None
    first = median([x.rss_mib[name] for x in samples[:EDGE_SAMPLES]])
    last = median([x.rss_mib[name] for x in samples[-EDGE_SAMPLES:]])
    assert first is not None and last is not None
    return first, last - first


def thirds(samples: Sequence[Sample], key: str) -> tuple[float | None, float | None]:
    """Median of a per-window figure over the first and the last third of the samples."""
    values = [(x.t, getattr(x, key)) for x in samples if getattr(x, key) is not None]
    if len(values) < 3:
        return None, None
    third = max(1, len(values) // 3)
    return median([v for _, v in values[:third]]), median([v for _, v in values[-third:]])


def judge(report: Report) -> list[str]:
    """Every bound the run broke, in words (none: it passed)."""
    steady = after_warmup(report.samples, report.warmup_s)
    return _memory(report, steady) + _service(report, steady) + _outcome(report.outcome)


def _memory(report: Report, steady: Sequence[Sample]) -> list[str]:
    """RSS flat, and no /metrics label set growing."""
    failures: list[str] = []
    for name in report.samples[0].rss_mib if report.samples else []:
        grown = rss_growth(steady, name)
        if grown is None:
            continue
        base, growth = grown
        bound = max(RSS_GROWTH_MIB, RSS_GROWTH_SHARE * base)
        if growth > bound:
            failures.append(
                f"RSS of {name} grew {growth:.1f} MiB after the warm-up (bound {bound:.1f})"
            )
        series = [x.series.get(name, -1) for x in steady if x.series.get(name, -1) >= 0]
        if len(series) >= 2 and series[-1] > SERIES_GROWTH * series[0] + SERIES_SLACK:
            failures.append(
                f"/metrics of {name} grew from {series[0]} to {series[-1]} samples "
                "after the warm-up (a label without bound?)"
            )
    return failures


def _service(report: Report, steady: Sequence[Sample]) -> list[str]:
    """p99 not trending up, the queue bounded."""
    failures: list[str] = []
    for key, slack in (("submit_p99", SUBMIT_SLACK_S), ("e2e_p99", E2E_SLACK_S)):
        first, last = thirds(steady, key)
        if first is not None and last is not None and last > P99_FACTOR * first + slack:
            failures.append(f"{key} trends up: {first * 1000:.0f} ms -> {last * 1000:.0f} ms")
    bound_jobs = DEPTH_SECONDS * report.rate
    deepest = max((x.backlog for x in steady), default=0)
    if deepest > bound_jobs:
        failures.append(f"backlog reached {deepest} jobs (bound {bound_jobs:.0f})")
    if any(x.depth.get("unread") == -1 for x in report.samples):
        failures.append("the queue depth could not be read at some sample")
    return failures


def _outcome(o: Outcome) -> list[str]:
    """Nothing lost, run twice, dead, stuck, unseen or undelivered; no error, no exit."""
    failures: list[str] = []
    counts = {
        "lost": o.lost,
        "unanswered submits": o.unknown,
        "run twice": o.duplicates,
        "dead-lettered": o.dead,
        "stuck after the drain": o.stuck,
        "completed events never seen on SSE": o.sse_missed,
        "webhooks never delivered": o.webhooks_missing,
    }
    failures += [f"{n} {what}" for what, n in counts.items() if n]
    for name, (fired, expected) in o.cron.items():
        if abs(fired - expected) > CRON_SLACK:
            failures.append(f"cron '{name}' fired {fired} times, expected ~{expected}")
    if o.exits:
        failures.append(f"processes exited: {', '.join(o.exits)}")
    if o.errors:
        failures.append(f"errors: {', '.join(f'{k} x{v}' for k, v in sorted(o.errors.items()))}")
    return failures


# ---- the table ---------------------------------------------------------------------------------
def _f(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def render(report: Report) -> str:
    samples, steady = report.samples, after_warmup(report.samples, report.warmup_s)
    lines = [
        f"soak on {report.db}: {report.minutes:g} min, {report.rate:g} jobs/s offered, "
        f"a sample every {report.sample_seconds:g} s, warm-up {report.warmup_s:.0f} s, "
        f"{len(samples)} samples",
        "",
        f"{'process':<12} {'procs':>5} {'first':>7} {'min':>7} {'max':>7} {'last':>7} "
        f"{'warm':>7} {'growth':>7} {'MiB/h':>7} {'series':>13}",
    ]
    for name in samples[0].rss_mib if samples else []:
        rss = [x.rss_mib[name] for x in samples]
        grown = rss_growth(steady, name)
        slope = slope_per_hour([(x.t, x.rss_mib[name]) for x in steady])
        series = f"{samples[0].series.get(name, -1)}->{samples[-1].series.get(name, -1)}"
        lines.append(
            f"{name:<12} {samples[-1].procs[name]:>5} {rss[0]:>7.1f} {min(rss):>7.1f} "
            f"{max(rss):>7.1f} {rss[-1]:>7.1f} {_f(grown[0] if grown else None):>7} "
            f"{_f(grown[1] if grown else None):>7} {_f(slope):>7} {series:>13}"
        )
    lines.append(
        "(RSS in MiB of each process's session; warm: median of the first "
        f"{EDGE_SAMPLES} samples after the warm-up; growth: to the median of the last "
        f"{EDGE_SAMPLES}; MiB/h: least-squares slope after the warm-up)"
    )
    lines.append("")
    for key, label in (
        ("submit_p99", "submit p99"),
        ("e2e_p99", "end-to-end p99"),
        ("submit_p50", "submit p50"),
        ("e2e_p50", "end-to-end p50"),
        ("batch_p99", "batch (200) p99"),
    ):
        first, last = thirds(steady, key)
        values = [getattr(x, key) for x in steady if getattr(x, key) is not None]
        lines.append(
            f"{label:<16} first third {_f(first and first * 1000, ' ms', 0):>8}, last third "
            f"{_f(last and last * 1000, ' ms', 0):>8}, worst window "
            f"{_f(max(values) * 1000 if values else None, ' ms', 0):>8}"
        )
    window_s = report.sample_seconds
    submitted = sum(x.submitted for x in steady)
    completed = sum(x.completed for x in steady)
    span = max(1.0, len(steady) * window_s)
    lines.append(
        f"throughput       {submitted / span:.1f} jobs/s in, {completed / span:.1f} jobs/s "
        f"seen completed (after the warm-up); SSE messages "
        f"{sum(x.events for x in samples) / max(1.0, len(samples) * window_s):.0f}/s; "
        f"job streams followed {sum(x.followed for x in samples)}"
    )
    backlogs = [x.backlog for x in steady] or [0]
    states: Counter[str] = Counter()
    for x in steady:
        for state, n in x.depth.items():
            states[state] = max(states[state], n)
    per_state = ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "-"
    lines.append(
        f"queue depth      backlog max {max(backlogs)}, last {backlogs[-1]}; "
        f"max by state: {per_state}"
    )
    loads = [x.load1 for x in samples] or [0.0]
    lines.append(
        f"load average     first {loads[0]:.1f}, max {max(loads):.1f}, "
        f"last {loads[-1]:.1f} (1 min, {os.cpu_count()} cores)"
    )
    o = report.outcome
    cron = ", ".join(f"{n} {f}/{e}" for n, (f, e) in o.cron.items())
    lines.append(
        f"jobs             {o.acked} acknowledged, {o.lost} lost, {o.duplicates} run twice, "
        f"{o.dead} dead, {o.stuck} stuck, {o.unknown} unanswered; drained in {o.drain_s:.0f} s"
    )
    lines.append(f"cron fires       {cron} (fired/expected)")
    lines.append(
        f"events           {o.sse_missed} completions not seen on SSE, "
        f"{o.webhooks_missing} webhooks missing"
    )
    errors = ", ".join(f"{k} x{v}" for k, v in sorted(o.errors.items())) or "none"
    lines.append(f"errors           {errors}; exits: {', '.join(o.exits) or 'none'}")
    retried = ", ".join(f"{k} x{v}" for k, v in sorted(o.retried.items())) or "none"
    lines.append(f"retried          {retried} (sent again after Retry-After, as clients do)")
    lines.append("")
    verdict = "PASS" if report.passed else "FAIL"
    lines.append(f"verdict {verdict}" + "".join(f"\n  - {f}" for f in report.failures))
    return "\n".join(lines)


# ---- one run -----------------------------------------------------------------------------------
def warmup_for(minutes: float) -> float:
    """A third of the run, at most five minutes."""
    return min(300.0, minutes * 60.0 / 3.0)


async def soak(
    kind: str,
    workdir: Path,
    pg_admin: str | None,
    *,
    minutes: float,
    sample_seconds: float,
    rate: float,
    lease: float = 10.0,
    workers: int = 2,
    concurrency: int = 16,
    quiet: bool = False,
) -> Report:
    receiver = Receiver()
    await receiver.start()
    async with stage("soak", kind, workdir, pg_admin, lease) as s:
        s.fleet.settings.update(SOAK_SETTINGS)
        depth = Depth(kind, s.target.url)
        try:
            return await _soak(
                s, receiver, depth, minutes, sample_seconds, rate, workers, concurrency, quiet
            )
        finally:
            await depth.close()
            await receiver.stop()


async def _soak(
    s: Stage,
    receiver: Receiver,
    depth: Depth,
    minutes: float,
    sample_seconds: float,
    rate: float,
    workers: int,
    concurrency: int,
    quiet: bool,
) -> Report:
    api_proc = await s.start_api()
    main = await with_api_key(s.api)
    side = await with_api_key(await sign_in(s.api.url, SIDE_EMAIL, SIDE_PASSWORD))
    await side.subscribe(receiver.url)
    ports = spawn_fleet(s, workers, concurrency)
    metrics = {api_proc.name: f"{s.api.url}/metrics"}
    metrics |= {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
    schedule_ids = await create_schedules(side)
    cron_started = time.monotonic()
    load = Load(main, side, rate=rate)
    sampler = Sampler(s.fleet.procs, metrics, depth)
    load.start()
    started = time.monotonic()
    report = Report(
        s.target.kind, minutes, rate, sample_seconds, warmup_for(minutes), [], Outcome()
    )
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            end = started + minutes * 60.0
            next_at = started + sample_seconds
            while next_at <= end + 0.01:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += sample_seconds
                errors = sum(load.errors.values()) + len(s.fleet.unexpected_exits())
                sample = await sampler.take(
                    time.monotonic() - started, load.take_window(), errors, http
                )
                if not quiet:
                    print(progress(sample, sample_seconds), file=sys.stderr, flush=True)
                    if load.errors or load.retried:
                        said = {
                            **load.errors,
                            **{f"retried {k}": v for k, v in load.retried.items()},
                        }
                        print(f"soak   so far: {said}", file=sys.stderr, flush=True)
        await load.stop_submitting()
        await pause_schedules(side, schedule_ids)
        cron_s = time.monotonic() - cron_started
        drained = await drain(load, depth, s)
        report.outcome = await count_outcome(s, load, depth, receiver, cron_s)
        report.outcome.drain_s = drained
    finally:
        await load.close()
    report.samples = sampler.samples
    report.failures = judge(report)
    report.table = render(report)
    return report


# ---- the command -------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="load time per database")
    parser.add_argument("--db", choices=("postgres", "sqlite", "both"), default="postgres")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="single submits per second")
    parser.add_argument("--pg-admin", help="an existing server's admin URL (no private cluster)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--json", type=Path, help="also write every sample and figure here")
    return parser


@contextlib.contextmanager
def postgres(admin: str | None, wanted: bool) -> Iterator[str | None]:
    if admin or not wanted:
        yield admin
        return
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster.admin_url
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kinds = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-soak-"))
    reports: list[Report] = []
    try:
        with postgres(args.pg_admin, "postgres" in kinds) as admin:
            for kind in kinds:
                print(f"soak: {args.minutes:g} min on {kind} ...", file=sys.stderr, flush=True)
                report = asyncio.run(
                    soak(
                        kind,
                        workdir / f"{kind}-{uuid.uuid4().hex[:6]}",
                        admin,
                        minutes=args.minutes,
                        sample_seconds=args.sample_seconds,
                        rate=args.rate,
                    )
                )
                reports.append(report)
                print(report.table, flush=True)
                print(flush=True)
    finally:
        if args.keep:
            print(f"soak: run directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=1))
    return 0 if reports and all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
