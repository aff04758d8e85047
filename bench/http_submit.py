"""HTTP submits to one ``conveyor api`` process, driven by wrk (SQLite and PostgreSQL stores).

For each store: a fresh migrated database (the Conveyor system's own ``setup``), then one
``conveyor api`` process at a time with the environment the bench's workers get plus
:data:`API_SETTINGS` (rate limits out of the way, e-mail verification off so the account can
be made through the API). Through the API: register a user, sign in (a JWT access token),
create an API key. Then, each scenario with a fresh API process:

* **single, JWT** / **single, API key**: ``POST /api/v1/jobs`` ``{"type": "noop"}``, 32
  connections, for ``seconds``;
* **batch 500, JWT**: ``POST /api/v1/jobs/batch`` with 500 jobs per request, 4 connections.

Figures: requests/s and jobs/s (wrk's count / its duration), p50/p99 latency (wrk's), server
CPU per request (the API process's utime + stime from /proc, after warm-up to after the run)
and, on PostgreSQL, database transactions per request: ``xact_commit + xact_rollback`` of the
bench database from ``pg_stat_database``, read with no connection open to it before the API
starts and after it stopped (a backend flushes its counters when it exits), minus the same
delta for an API process that only started and stopped (start-up's own transactions), divided
by the requests served (the warm-up's included).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import machine
from bench.conveyor_systems import ConveyorSystem
from bench.procs import BenchError, spawn, stop, tail

LUA = Path(__file__).resolve().with_name("http_submit.lua")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
EMAIL, PASSWORD = "bench-http@example.com", "bench-http-password-123"
BATCH = 500
WARMUP_REQUESTS = 20
START_TIMEOUT_S = 60.0
# The API's per-user and per-IP limits would throttle the benchmark's single user: raised.
# The API's queue gauges refresh (every 5 s, not part of any request) is switched off.
API_SETTINGS = {
    "CONVEYOR_RATE_LIMIT_SUBMIT": "100000000/minute",
    "CONVEYOR_RATE_LIMIT_JOBS": "1000000000/minute",
    "CONVEYOR_RATE_LIMIT_AUTH": "100000/minute",
    "CONVEYOR_RATE_LIMIT_LOGIN_ACCOUNT": "100000/minute",
    "CONVEYOR_EMAIL_VERIFICATION": "false",
    "CONVEYOR_METRICS_REFRESH_INTERVAL": "0",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    jobs_per_request: int
    connections: int
    auth: str  # "jwt" | "api_key"


SCENARIOS = (
    Scenario("single, JWT", "/api/v1/jobs", 1, 32, "jwt"),
    Scenario("single, API key", "/api/v1/jobs", 1, 32, "api_key"),
    Scenario(f"batch {BATCH}, JWT", "/api/v1/jobs/batch", BATCH, 4, "jwt"),
)


@dataclass(frozen=True)
class HttpFigures:
    store: str
    scenario: str
    connections: int
    seconds: float
    requests: int
    non_2xx: int
    socket_errors: int
    requests_per_s: float
    jobs_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float
    xacts_per_request: float | None  # PostgreSQL only
    rollbacks_per_request: float | None
    cpu_busy_before: float | None = None  # share of both cores busy in the second before

    def is_batch(self) -> bool:
        return self.scenario.startswith("batch")


def wrk_path() -> str:
    """wrk, installed with apt-get when missing (needs root, as on the benchmark machine)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: http: installing wrk with apt-get ...", file=sys.stderr)
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"wrk is missing and apt-get install wrk failed: {exc}") from exc
    return shutil.which("wrk") or "wrk"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    """One ``conveyor api`` process for a store, started and stopped per scenario."""

    def __init__(self, system: ConveyorSystem, workdir: Path) -> None:
        self.system, self.workdir = system, workdir
        self.secret = secrets.token_urlsafe(32)  # the same for every process: tokens stay valid
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **self.system.env(),
            **API_SETTINGS,
            "CONVEYOR_HOST": "127.0.0.1",
            "CONVEYOR_PORT": str(self.port),
            "CONVEYOR_SECRET_KEY": self.secret,
        }

    @contextmanager
    def running(self) -> Iterator[int]:
        """The API process, healthy; yields its pid."""
        argv = [self.system.conveyor, "api", "--port", str(self.port)]
        log = self.workdir / "api.log"
        proc = spawn(argv, self.env(), log)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise BenchError(f"conveyor api exited {proc.returncode}:\n{tail(log)}")
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"conveyor api not healthy in {START_TIMEOUT_S}s")
                time.sleep(0.1)
            yield proc.pid
        finally:
            stop(proc)


def _credentials(url: str) -> dict[str, str]:
    """Register, sign in and create an API key, all through the API."""
    with httpx.Client(base_url=url, timeout=30) as http:
        http.post(
            "/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD}
        ).raise_for_status()
        login = http.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        login.raise_for_status()
        jwt = str(login.json()["access_token"])
        key = http.post(
            "/api/v1/me/api-keys",
            json={"name": "bench"},
            headers={"Authorization": f"Bearer {jwt}"},
        )
        key.raise_for_status()
        return {"jwt": jwt, "api_key": str(key.json()["key"])}


def _warm_up_count(scenario: Scenario) -> int:
    return WARMUP_REQUESTS if scenario.jobs_per_request == 1 else 2


def _warm_up(url: str, scenario: Scenario, token: str, body: bytes) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        for _ in range(_warm_up_count(scenario)):
            http.post(scenario.path, content=body).raise_for_status()


def _body(scenario: Scenario) -> bytes:
    job = {"type": "noop"}
    if scenario.jobs_per_request == 1:
        return json.dumps(job).encode()
    return json.dumps({"jobs": [job] * scenario.jobs_per_request}).encode()


def _wrk(
    url: str, scenario: Scenario, token: str, body_file: Path, seconds: float
) -> dict[str, Any]:
    argv = [
        wrk_path(),
        *("-t", "1", "-c", str(scenario.connections), "-d", f"{seconds:.0f}s"),
        *("--timeout", "30s", "-s", str(LUA), url + scenario.path),
    ]
    env = {**os.environ, "BENCH_TOKEN": token, "BENCH_BODY_FILE": str(body_file)}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise BenchError(
            f"wrk failed ({done.returncode}): {done.stderr[-500:]}{done.stdout[-500:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def _pg_xacts(dbname: str) -> tuple[int, int]:
    """(commits, rollbacks) of the database, once no backend is connected to it."""
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        for _ in range(100):
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dbname
            )
            if not busy:
                break
            await asyncio.sleep(0.1)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1", dbname
        )
    finally:
        await conn.close()
    return (int(row["xact_commit"]), int(row["xact_rollback"])) if row else (0, 0)


def _xacts(system: ConveyorSystem) -> tuple[int, int] | None:
    if system.database != "postgres":
        return None
    return asyncio.run(_pg_xacts(system.database_url.rsplit("/", 1)[1]))


def _delta(after: tuple[int, int] | None, before: tuple[int, int] | None) -> tuple[int, int]:
    if after is None or before is None:
        return (0, 0)
    return (after[0] - before[0], after[1] - before[1])


def _scenario(
    api: Api, scenario: Scenario, token: str, seconds: float, baseline: tuple[int, int]
) -> HttpFigures:
    body = _body(scenario)
    body_file = api.workdir / f"body-{scenario.jobs_per_request}.json"
    body_file.write_bytes(body)
    busy = machine.cpu_busy()
    before = _xacts(api.system)
    with api.running() as pid:
        _warm_up(api.url, scenario, token, body)
        cpu0 = _cpu_s(pid)
        out = _wrk(api.url, scenario, token, body_file, seconds)
        cpu1 = _cpu_s(pid)
    commits, rollbacks = _delta(_xacts(api.system), before)
    requests = int(out["requests"])
    duration = int(out["duration_us"]) / 1e6
    pg = before is not None and requests > 0
    served = requests + _warm_up_count(scenario)
    return HttpFigures(
        store=api.system.database,
        scenario=scenario.name,
        connections=scenario.connections,
        seconds=duration,
        requests=requests,
        non_2xx=int(out["non_2xx"]),
        socket_errors=int(out["socket_errors"]),
        requests_per_s=requests / duration if duration else 0.0,
        jobs_per_s=requests * scenario.jobs_per_request / duration if duration else 0.0,
        p50_ms=int(out["p50_us"]) / 1000,
        p99_ms=int(out["p99_us"]) / 1000,
        server_cpu_ms_per_request=(cpu1 - cpu0) * 1000 / requests if requests else 0.0,
        xacts_per_request=(commits + rollbacks - sum(baseline)) / served if pg else None,
        rollbacks_per_request=(rollbacks - baseline[1]) / served if pg else None,
        cpu_busy_before=busy,
    )


def measure_store(database: str, source: Path | None, seconds: float) -> list[HttpFigures]:
    """Every scenario against one store; the database is dropped afterwards."""
    system = ConveyorSystem(database, source=source)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-http-{database}-"))
    try:
        system.setup()
        api = Api(system, workdir)
        with api.running():
            tokens = _credentials(api.url)
        # start-up and shut-down alone: subtracted from every scenario's transaction count
        before = _xacts(system)
        with api.running():
            pass
        baseline = _delta(_xacts(system), before)
        results = []
        for scenario in SCENARIOS:
            figures = _scenario(api, scenario, tokens[scenario.auth], seconds, baseline)
            print(
                f"bench: http {database}: {scenario.name}: {figures.requests_per_s:,.0f} req/s, "
                f"{figures.jobs_per_s:,.0f} jobs/s, p50 {figures.p50_ms:.1f} ms, "
                f"CPU {figures.server_cpu_ms_per_request:.2f} ms/req"
                + (
                    f", {figures.xacts_per_request:.1f} xacts/req"
                    if figures.xacts_per_request is not None
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
            results.append(figures)
        return results
    finally:
        system.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
