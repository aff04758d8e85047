"""The scale-out deployment for real: PostgreSQL, Redis and RabbitMQ, and every Conveyor part
as its own OS process — two `conveyor api` behind one Redis rate limit, three `conveyor
worker`, two `conveyor scheduler` and one `conveyor results`.

Thousands of jobs go in through both APIs (batches and single submits, failing and retrying
ones, idempotent repeats), a cron schedule fires every second, one worker is killed with
SIGKILL and the leading scheduler stopped with SIGTERM while work is under way. Then: every
accepted job ended exactly as expected, nothing ran twice except what the killed worker had
in hand (attempt 2, same id), the standby scheduler took over, each cron fire ran once, and
every finished job's event is in RabbitMQ's `jobs.completed` queue. The figures it measured
are printed (`pytest -s`) for docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage

from tests.conftest import PG_PORT, _missing, fresh_database
from tests.events.conftest import AMQP_URL, Broker, closed_port, private_broker
from tests.support.processes import Cluster, Proc, Run, eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.rabbitmq,
    pytest.mark.timeout(300),
]

REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PASSWORD = "correct horse battery"
ADMIN = ("admin@example.com", "admin-password-123")
SUBMIT_LIMIT = 40  # submissions per user per minute, counted in Redis for both APIs
BATCHES, BATCH_SIZE = 6, 500
SLEEPERS = 30  # 4-second jobs, first in line, so that the killed worker has some in hand
IDEMPOTENT_KEYS = 15
STARTUP = 40.0  # seconds for eight processes to start on a busy 2-core machine
SETTLE = 90.0  # seconds for everything accepted to end, rescues included


@dataclass(frozen=True)
class Expected:
    """What a job must end as: its state, and its attempts when nothing was rescued."""

    state: str
    attempts: int
    recorded: bool  # a tests.support.handlers job: its runs are on file


RECORD = Expected("completed", 1, recorded=True)


def bulk_job(n: int) -> tuple[dict[str, Any], Expected]:
    """Job n of the bulk batches: mostly `record`, with retrying and failing `sleep` jobs."""
    if n % 50 == 10:  # fails once, then succeeds
        return {"type": "sleep", "payload": {"seconds": 0, "steps": 1, "fail_attempts": 1}}, (
            Expected("completed", 2, recorded=False)
        )
    if n % 100 == 25:  # fails for good at once
        payload = {"seconds": 0, "steps": 1, "fail": True, "permanent": True}
        return {"type": "sleep", "payload": payload}, Expected("failed", 1, recorded=False)
    if n % 100 == 75:  # fails both of its attempts
        payload = {"seconds": 0, "steps": 1, "fail": True}
        return {"type": "sleep", "payload": payload, "max_attempts": 2}, (
            Expected("failed", 2, recorded=False)
        )
    return {"type": "record", "payload": {"n": n}}, RECORD


# ---- the services --------------------------------------------------------------------------
@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", request, tmp_path) as url:
        yield url


@pytest.fixture
async def rate_namespace() -> AsyncIterator[str]:
    """A Redis key namespace of this test's own, deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    namespace = f"scale-{uuid.uuid4().hex[:10]}"
    try:
        try:
            await client.ping()
        except (OSError, aioredis.RedisError) as exc:
            _missing("Redis", exc)
        yield namespace
        async for key in client.scan_iter(match=f"{namespace}*"):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
async def rabbit() -> AsyncIterator[Broker]:
    """A private corner of RabbitMQ, its queues declared before the relay starts."""
    async with private_broker() as broker:
        yield broker


@dataclass
class Deployment:
    """The eight processes, a client per API, and what the test learns on the way."""

    cluster: Cluster
    apis: list[httpx.AsyncClient]
    workers: list[Proc]
    schedulers: list[Proc]
    relay: Proc
    api_procs: list[Proc]
    expected: dict[str, Expected] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    connections: Counter[str] = field(default_factory=Counter)  # most seen, per process
    victim: Proc | None = None

    def expect(self, jobs: list[dict[str, Any]], outcomes: list[Expected]) -> None:
        assert len(jobs) == len(outcomes)
        for job, outcome in zip(jobs, outcomes, strict=True):
            assert job["id"] not in self.expected
            self.expected[job["id"]] = outcome


def shared_settings(tmp_path: Path, namespace: str, prefix: str) -> dict[str, str]:
    """The environment every process gets (one SECRET_KEY, one REDIS_URL, one AMQP_URL)."""
    return {
        "secret_key": "scale-out-test-secret-key-long-enough-for-hs256",
        "admin_email": ADMIN[0],
        "admin_password": ADMIN[1],
        "mail_url": f"file://{tmp_path / 'mail'}",
        "data_dir": str(tmp_path / "data"),
        "redis_url": REDIS_URL,
        "rate_limit_namespace": namespace,
        "rate_limit_submit": f"{SUBMIT_LIMIT}/minute",
        "rate_limit_auth": "1000/minute",
        "amqp_url": AMQP_URL,
        "amqp_prefix": prefix,
        "argon2_time_cost": "1",
        "argon2_memory_kib": "1024",
        "lease_seconds": "2",
        "heartbeat_interval": "0.5",
        "scheduler_interval": "0.2",
    }


@pytest.fixture
async def deployment(
    database: str, tmp_path: Path, rate_namespace: str, rabbit: Broker
) -> AsyncIterator[Deployment]:
    cluster = Cluster(database, tmp_path)
    settings = shared_settings(tmp_path, rate_namespace, rabbit.prefix)
    ports = [closed_port(), closed_port()]
    clients: list[httpx.AsyncClient] = []
    try:
        api_procs = [
            cluster.spawn(f"api-{n}", ["api", "--port", str(port)], settings)
            for n, port in enumerate(ports, 1)
        ]
        workers = [
            cluster.worker(f"worker-{n}", concurrency=16, settings=settings) for n in (1, 2, 3)
        ]
        schedulers = [cluster.scheduler(f"scheduler-{n}", settings) for n in (1, 2)]
        relay = cluster.spawn("results", ["results"], settings)
        clients = [
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) for port in ports
        ]

        async def all_ready() -> bool:
            return all([await ready(client) for client in clients])

        await eventually(all_ready, timeout=STARTUP, what="both APIs to be ready")
        yield Deployment(cluster, clients, workers, schedulers, relay, api_procs)
    finally:
        for client in clients:
            await client.aclose()
        cluster.close()
        print(cluster.report()[-20_000:])  # shown when the test failed


async def ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/ready")).status_code == 200
    except httpx.TransportError:
        return False


# ---- the scenario --------------------------------------------------------------------------
async def test_scale_out_on_postgres_redis_and_rabbitmq(
    deployment: Deployment, database: str, rabbit: Broker
) -> None:
    d = deployment
    api1, api2 = d.apis
    heard = await Heard.listening(rabbit)
    started = time.monotonic()
    admin = await login(api1, *ADMIN)
    bulk, idem, limited = [await user(d, admin, name) for name in ("bulk", "idem", "limited")]
    schedule = await post(api1, "/api/v1/schedules", admin, cron_schedule(), 201)

    # Phase A: half of the bulk through both APIs, then long jobs ahead of what is left.
    await submit_bulk(d, bulk, range(0, BATCHES // 2))
    sleepers = [{"type": "record_sleep", "payload": {"seconds": 4}, "priority": 10}] * SLEEPERS
    made = await post(api1, "/api/v1/jobs/batch", bulk, {"jobs": sleepers}, 201)
    d.expect(made, [RECORD] * SLEEPERS)

    # Midway: a scheduler leaves, and a worker dies with jobs in hand.
    d.victim = await worker_with_jobs_in_hand(d, {job["id"] for job in made})
    leader, standby = await leading_scheduler(d)
    leader.send(signal.SIGTERM)
    d.victim.send(signal.SIGKILL)
    stopped_at = time.time()
    assert await d.victim.wait_exit(5) == -signal.SIGKILL
    in_hand = unfinished(d.cluster, d.victim)  # started, never finished: must run again

    # Phase B: the other half, idempotent repeats across the APIs, the shared rate limit.
    await submit_bulk(d, bulk, range(BATCHES // 2, BATCHES))
    await idempotent_repeats(d, idem)
    await one_limit_for_both_apis(d, limited)
    submitted = time.monotonic()
    d.figures["accepted"] = len(d.expected)
    d.figures["submit_s"] = submitted - started

    peak = await settle(d, database)
    done = time.monotonic()
    await post(api2, f"/api/v1/schedules/{schedule['id']}/pause", admin, None, 200)
    d.figures["peak_connections"] = peak
    await cron_fired_once_each(d, database, schedule["id"], stopped_at)
    await completed_events_reached_rabbitmq(d, database, heard)
    await everything_ended_as_expected(d, database, in_hand)
    assert await leader.wait_exit(15) == 0
    assert "is leader" in standby.output()  # it took over
    await stop_the_rest(d)
    report(d, done - started)


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    body = {"email": email, "password": password}
    r = await client.post("/api/v1/auth/login", json=body)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def user(d: Deployment, admin: dict[str, str], name: str) -> dict[str, str]:
    """A verified user created by the admin through API 1, signed in through API 2: the
    token one replica signs is good on the other (one SECRET_KEY)."""
    email = f"{name}@example.com"
    body = {"email": email, "password": PASSWORD, "verified": True}
    await post(d.apis[0], "/api/v1/admin/users", admin, body, 201)
    return await login(d.apis[1], email, PASSWORD)


async def post(
    client: httpx.AsyncClient, path: str, auth: dict[str, str], body: Any, status: int
) -> Any:
    r = await client.post(path, json=body, headers=auth)
    assert r.status_code == status, f"{path}: {r.status_code} {r.text[:500]}"
    return r.json()


def cron_schedule() -> dict[str, Any]:
    # Six fields: croniter's last one is seconds; this fires every second.
    return {"name": "every second", "cron": "* * * * * *", "type": "record", "payload": {}}


async def submit_bulk(d: Deployment, auth: dict[str, str], batches: range) -> None:
    """Batches of BATCH_SIZE, alternately through API 1 and API 2, two at a time."""

    async def one(b: int) -> None:
        specs = [bulk_job(b * BATCH_SIZE + i) for i in range(BATCH_SIZE)]
        body = {"jobs": [job for job, _ in specs]}
        made = await post(d.apis[b % 2], "/api/v1/jobs/batch", auth, body, 201)
        d.expect(made, [outcome for _, outcome in specs])

    await asyncio.gather(*(one(b) for b in batches))


async def idempotent_repeats(d: Deployment, auth: dict[str, str]) -> None:
    """The same key through API 1 (201, created) then API 2 (200, the same job)."""
    for k in range(IDEMPOTENT_KEYS):
        headers = auth | {"Idempotency-Key": f"order-{k}"}
        body = {"type": "record", "payload": {"order": k}}
        first = await post(d.apis[0], "/api/v1/jobs", headers, body, 201)
        again = await post(d.apis[1], "/api/v1/jobs", headers, body, 200)
        assert again["id"] == first["id"]
        d.expect([first], [RECORD])


async def one_limit_for_both_apis(d: Deployment, auth: dict[str, str]) -> None:
    """SUBMIT_LIMIT + 10 single submits alternating between the APIs: one budget."""
    statuses: list[int] = []
    for n in range(SUBMIT_LIMIT + 10):
        r = await d.apis[n % 2].post(
            "/api/v1/jobs", json={"type": "record", "payload": {"limited": n}}, headers=auth
        )
        statuses.append(r.status_code)
        if r.status_code == 201:
            d.expect([r.json()], [RECORD])
        else:
            assert r.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["retry-after"]) <= 60
    assert statuses == [201] * SUBMIT_LIMIT + [429] * 10, Counter(statuses)


def unfinished(cluster: Cluster, proc: Proc) -> set[str]:
    """Jobs whose handler `proc` started and has not finished."""
    ended = {r.job_id for r in cluster.runs("end") if r.pid == proc.pid}
    return {r.job_id for r in cluster.runs("start") if r.pid == proc.pid} - ended


async def leading_scheduler(d: Deployment) -> tuple[Proc, Proc]:
    """The scheduler that says it leads (its log), and the other one."""
    await eventually(
        lambda: any("is leader" in s.output() for s in d.schedulers),
        timeout=STARTUP,
        what="a scheduler to lead",
    )
    first, second = d.schedulers
    return (first, second) if "is leader" in first.output() else (second, first)


async def worker_with_jobs_in_hand(d: Deployment, sleepers: set[str]) -> Proc:
    """The worker running the most of the long `sleepers`, once one runs any."""
    found: list[Proc] = []

    def busiest() -> bool:
        count_connections(d)
        counts = {w.pid: len(unfinished(d.cluster, w) & sleepers) for w in d.workers}
        best = max(d.workers, key=lambda w: counts[w.pid])
        found[:] = [best] if counts[best.pid] else []
        return bool(found)

    await eventually(busiest, timeout=STARTUP, what="a worker with jobs in hand")
    return found[0]


async def settle(d: Deployment, database: str) -> int:
    """Wait until every accepted job is terminal; the peak of open database connections."""
    conn = await asyncpg.connect(database)
    peak = 0
    try:

        async def ended() -> bool:
            nonlocal peak
            peak = max(peak, await conn.fetchval(CONNECTIONS, database.rsplit("/", 1)[1]))
            count_connections(d)
            open_ = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE schedule_id IS NULL"
                " AND state NOT IN ('completed', 'failed', 'cancelled')"
            )
            total = await conn.fetchval("SELECT count(*) FROM jobs WHERE schedule_id IS NULL")
            return bool(open_ == 0 and total == len(d.expected))

        await eventually(ended, timeout=SETTLE, what="every accepted job to end", every=0.1)
    finally:
        await conn.close()
    return peak


CONNECTIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"


def count_connections(d: Deployment) -> None:
    """Each running process's open connections to PostgreSQL's port, from /proc (its socket
    inodes among the established TCP connections); the most seen is kept."""
    remote = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(f":{PG_PORT:04X}") and fields[3] == "01":  # ESTABLISHED
                remote.add(fields[9])
    for proc in d.cluster.procs:
        sockets = set()
        with contextlib.suppress(OSError):  # it has exited
            for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        sockets.add(target[len("socket:[") : -1])
        d.connections[proc.name] = max(d.connections[proc.name], len(sockets & remote))


async def jobs_table(database: str, where: str = "TRUE") -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT id, type, state, attempt, result, errors, schedule_id, finished_at"
            f" FROM jobs WHERE {where}"
        )
    finally:
        await conn.close()
    return {
        row["id"]: dict(row) | {"result": loads(row["result"]), "errors": loads(row["errors"])}
        for row in rows
    }


def loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# ---- what must hold ------------------------------------------------------------------------
async def everything_ended_as_expected(d: Deployment, database: str, in_hand: set[str]) -> None:
    jobs = await jobs_table(database, "schedule_id IS NULL")
    assert set(jobs) == set(d.expected)
    starts, ends = d.cluster.runs("start"), d.cluster.runs("end")
    assert d.victim is not None
    rescued = set()
    for job_id, want in d.expected.items():
        job = jobs[job_id]
        assert job["state"] == want.state, (job_id, want, job)
        lease_losses = [e for e in job["errors"] if e["type"] == "LeaseExpired"]
        assert all(d.victim.owns(e["worker_id"]) for e in lease_losses), job
        if lease_losses:
            rescued.add(job_id)
        elif want.attempts != job["attempt"]:
            raise AssertionError(f"{job_id}: attempt {job['attempt']}, expected {want}")
        if want.recorded:
            ran_once(job, starts, ends, d.victim)
    # The killed worker's unfinished jobs, and only its jobs, ran a second time.
    assert in_hand and in_hand <= rescued
    d.figures["rescued"] = len(rescued)


def ran_once(job: dict[str, Any], starts: list[Run], ends: list[Run], victim: Proc) -> None:
    """A recorded job ran once; or, lost by the killed worker, once more as attempt 2."""
    mine = sorted((r.attempt, r.pid) for r in starts if r.job_id == job["id"])
    finished = sorted((r.attempt, r.pid) for r in ends if r.job_id == job["id"])
    last_attempt, last_pid = mine[-1]
    assert job["result"] == {"attempt": last_attempt, "pid": last_pid}, (job, mine)
    assert job["attempt"] == last_attempt
    if last_attempt == 1:
        assert mine == [(1, last_pid)] and (1, last_pid) in finished, (job, mine)
        return
    assert last_attempt == 2 and last_pid != victim.pid, (job, mine)
    assert (2, last_pid) in finished, (job, finished)
    assert mine in ([(2, last_pid)], [(1, victim.pid), (2, last_pid)]), (job, mine)
    assert [e["type"] for e in job["errors"]] == ["LeaseExpired"], job


async def cron_fired_once_each(
    d: Deployment, database: str, schedule_id: str, sigterm_at: float
) -> None:
    """One job per fire and one fire per second at most; still firing after the SIGTERM."""
    await asyncio.sleep(1)  # a fire under way when the pause came commits by now

    async def fired_jobs_ended() -> bool:
        jobs = await jobs_table(database, f"schedule_id = '{schedule_id}'")
        return all(j["state"] == "completed" for j in jobs.values())

    await eventually(fired_jobs_ended, timeout=30, what="the cron jobs to end")
    jobs = await jobs_table(database, f"schedule_id = '{schedule_id}'")
    conn = await asyncpg.connect(database)
    try:
        fires = await conn.fetch(
            "SELECT fire_at, job_id FROM schedule_fires WHERE schedule_id = $1 ORDER BY fire_at",
            schedule_id,
        )
    finally:
        await conn.close()
    assert sorted(jobs) == sorted(f["job_id"] for f in fires)  # a job per fire, no other
    times = [f["fire_at"] for f in fires]
    assert len(set(times)) == len(times) and all(t.microsecond == 0 for t in times)
    assert len(fires) >= 5, times
    starts, ends = d.cluster.runs("start"), d.cluster.runs("end")
    assert d.victim is not None
    for job in jobs.values():
        ran_once(job, starts, ends, d.victim)
    assert times[-1].timestamp() > sigterm_at + 2  # still firing after a scheduler left
    d.figures["cron_fires"] = len(fires)
    d.figures["cron_gap_s"] = max((b - a).total_seconds() for a, b in itertools.pairwise(times))


@dataclass
class Heard:
    """The messages of `<prefix>jobs.completed`, taken as they arrive by a consumer."""

    messages: list[tuple[float, str | None, dict[str, Any]]] = field(default_factory=list)

    async def take(self, message: AbstractIncomingMessage) -> None:
        self.messages.append((time.time(), message.message_id, json.loads(message.body)))

    @classmethod
    async def listening(cls, rabbit: Broker) -> Heard:
        heard = cls()
        queue = await rabbit.channel.declare_queue(f"{rabbit.prefix}jobs.completed", durable=True)
        await queue.consume(heard.take, no_ack=True)
        return heard


async def completed_events_reached_rabbitmq(d: Deployment, database: str, heard: Heard) -> None:
    """Every finished job's message in `jobs.completed` (completed, and failed too: the queue
    takes every finished job), of the job's final state; a repeat only with the same event id.
    """
    jobs = await jobs_table(database)
    finished = {job_id: job["state"] for job_id, job in jobs.items()}
    last_finished = max(job["finished_at"] for job in jobs.values()).timestamp()

    def seen() -> dict[str, set[int]]:
        ids: dict[str, set[int]] = {}
        for _, _, body in list(heard.messages):
            ids.setdefault(body["job"]["id"], set()).add(body["event_id"])
        return ids

    await eventually(
        lambda: set(finished) <= set(seen()), timeout=60, what="every job's jobs.completed event"
    )
    assert set(seen()) == set(finished)
    assert all(len(ids) == 1 for ids in seen().values())  # duplicates carry the same event id
    for _, message_id, body in heard.messages:
        assert body["schema"] == "conveyor.event/1"
        assert message_id == str(body["event_id"])
        assert body["type"] == finished[body["job"]["id"]], body
    d.figures["events_lag_s"] = max(at for at, _, _ in heard.messages) - last_finished
    d.figures["completed_events"] = len(heard.messages)
    d.figures["completed"] = Counter(finished.values())["completed"]


async def stop_the_rest(d: Deployment) -> None:
    """SIGTERM to everyone still running: each stops cleanly, exit 0."""
    assert d.victim is not None
    rest = [*d.api_procs, *(w for w in d.workers if w is not d.victim), d.relay]
    rest += [s for s in d.schedulers if s.running()]
    for proc in rest:
        proc.send(signal.SIGTERM)
    for proc in rest:
        assert await proc.wait_exit(20) == 0, proc.name
    assert await d.victim.wait_exit(1) == -signal.SIGKILL


def report(d: Deployment, seconds: float) -> None:
    f = d.figures
    jobs = f["accepted"] + f["cron_fires"]
    print(
        f"\nscale-out: {jobs:.0f} jobs ({f['accepted']:.0f} submitted through 2 APIs in "
        f"{f['submit_s']:.1f} s, {f['cron_fires']:.0f} cron fires) all ended {seconds:.1f} s "
        f"after the first request: {jobs / seconds:.0f} jobs/s end to end with 3 workers "
        f"(one killed midway; {f['rescued']:.0f} jobs rescued); "
        f"{f['completed_events']:.0f} messages in jobs.completed ({f['completed']:.0f} completed, "
        f"the rest failed), the last {f['events_lag_s'] * 1000:.0f} ms after the last job ended; "
        f"peak {f['peak_connections']:.0f} PostgreSQL connections "
        f"for 8 processes; longest gap between cron fires {f['cron_gap_s']:.0f} s"
    )
    print("most PostgreSQL connections seen per process:", dict(sorted(d.connections.items())))
