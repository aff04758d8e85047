"""Rate limits: per client IP on the account calls, per user on job submission, in memory by
default and shared by every API process through Redis."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from conveyor.api.ratelimit import Charge, RateLimits
from conveyor.errors import RateLimited
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Api, api_settings
from tests.api.test_security_support import error_of, serve
from tests.dashboard.conftest import csrf_of

IN_CI = os.environ.get("CI", "").lower() == "true"
# Database 15 is these tests' own: the fixture empties it before and after each test.
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def login(client: httpx.AsyncClient, email: str = "nobody@example.com", **kw: Any) -> int:
    r = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": "wrong password"}, **kw
    )
    return r.status_code


def assert_limited(response: httpx.Response) -> int:
    """A 429 in our error shape with a sensible Retry-After; the number of seconds."""
    assert response.status_code == 429, response.text
    assert error_of(response)["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


async def submit(api: Api, headers: dict[str, str]) -> httpx.Response:
    return await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers)


async def test_the_fourth_auth_call_from_one_ip_is_429(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(db_url, tmp_path, rate_limit_auth="3/minute")
    async with serve(settings) as served:
        api, client_from = served.api, served.client_from
        assert [await login(api.client) for _ in range(3)] == [401, 401, 401]
        limited = await api.client.post(
            "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert_limited(limited)
        # A forwarded-for header does not make a new client; another address is one.
        spoofed = await login(api.client, headers={"X-Forwarded-For": "203.0.113.9"})
        assert spoofed == 429
        assert await login(client_from("198.51.100.7")) == 401

        registrations = [
            await api.client.post(
                "/api/v1/auth/register", json={"email": f"u{i}@example.com", "password": PASSWORD}
            )
            for i in range(4)
        ]
        assert [r.status_code for r in registrations[:3]] == [202, 202, 202]
        assert_limited(registrations[3])

        otp = client_from("198.51.100.8")
        codes = [
            await otp.post("/api/v1/auth/verify", json={"email": "u0@example.com", "code": "1"})
            for _ in range(3)
        ]
        assert [r.status_code for r in codes] == [422, 422, 422]
        assert_limited(
            await otp.post("/api/v1/auth/verify", json={"email": "u0@example.com", "code": "1"})
        )
        resend = client_from("198.51.100.9")
        sent = [
            await resend.post("/api/v1/auth/resend", json={"email": "u0@example.com"})
            for _ in range(4)
        ]
        assert [r.status_code for r in sent[:3]] == [202, 202, 202]
        assert_limited(sent[3])


async def test_job_submission_is_limited_per_user(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(db_url, tmp_path, rate_limit_submit="3/minute")
    async with serve(settings) as served:
        api = served.api
        ada, bob = await api.user("ada@example.com"), await api.user("bob@example.com")
        assert [(await submit(api, ada)).status_code for _ in range(3)] == [201] * 3
        assert_limited(await submit(api, ada))
        batch = await api.client.post(
            "/api/v1/jobs/batch", json={"jobs": [{"type": "noop"}]}, headers=ada
        )
        assert_limited(batch)
        assert (await submit(api, bob)).status_code == 201
        # Reading is not submitting.
        listed = await api.client.get("/api/v1/jobs", headers=ada)
        assert listed.status_code == 200 and len(listed.json()["items"]) == 3


async def stored(api: Api, headers: dict[str, str]) -> int:
    listed = await api.client.get("/api/v1/jobs", params={"limit": 1000}, headers=headers)
    assert listed.status_code == 200, listed.text
    return len(listed.json()["items"])


async def batch(api: Api, headers: dict[str, str], size: int) -> httpx.Response:
    jobs = [{"type": "noop"}] * size
    return await api.client.post("/api/v1/jobs/batch", json={"jobs": jobs}, headers=headers)


async def test_the_jobs_limit_counts_every_job_of_a_batch(db_url: str, tmp_path: Path) -> None:
    """CONVEYOR_RATE_LIMIT_JOBS counts jobs, not requests: a batch costs its length."""
    settings = api_settings(db_url, tmp_path, rate_limit_jobs="3/minute")
    async with serve(settings) as served:
        api = served.api
        ada, bob = await api.user("ada@example.com"), await api.user("bob@example.com")
        too_many = await batch(api, ada, 4)
        assert_limited(too_many)
        assert "4 jobs" in error_of(too_many)["message"]
        assert await stored(api, ada) == 0
        assert [(await submit(api, ada)).status_code for _ in range(3)] == [201] * 3
        assert_limited(await submit(api, ada))
        assert_limited(await batch(api, ada, 1))
        assert await stored(api, ada) == 3

        assert (await batch(api, bob, 2)).status_code == 201
        assert_limited(await batch(api, bob, 2))  # 2 + 2 > 3: none of the second batch stored
        assert (await submit(api, bob)).status_code == 201
        assert await stored(api, bob) == 3


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """REDIS_URL, emptied before and after; skipped without a server (failed in CI).

    Each xdist worker gets a database of its own (REDIS_URL's for the first, then 13, 12...;
    14 is the benchmark's): two workers emptying one database under each other's running
    test, and counting each other's hits from 127.0.0.1, made these tests flaky with -n 2.
    """
    url = _worker_database(REDIS_URL)
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        try:
            await client.ping()
        except (OSError, aioredis.RedisError) as exc:
            message = f"Redis is not reachable at {url} ({exc})"
            if IN_CI:
                pytest.fail(f"{message}: CI needs it running")
            pytest.skip(message)
        await client.flushdb()
        yield url
        await client.flushdb()
    finally:
        await client.aclose()


def _worker_database(url: str) -> str:
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    if worker == 0:
        return url
    return urlsplit(url)._replace(path=f"/{max(0, 14 - worker)}").geturl()


@pytest.mark.redis
async def test_api_processes_share_one_limit_through_redis(
    db_url: str, tmp_path: Path, redis_url: str
) -> None:
    settings = api_settings(
        db_url,
        tmp_path,
        redis_url=redis_url,
        rate_limit_auth="3/minute",
        rate_limit_submit="3/minute",
    )
    async with serve(settings) as one, serve(settings) as two:
        a, b = one.api, two.api
        # Signed in from elsewhere first: the account calls from 127.0.0.1 are spent below.
        r = await one.client_from("192.0.2.1").post(
            "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}

        assert [await login(a.client), await login(a.client)] == [401, 401]
        assert await login(b.client) == 401
        fourth = await b.client.post(
            "/api/v1/auth/login", json={"email": "x@example.com", "password": "x"}
        )
        assert_limited(fourth)
        assert await login(a.client) == 429

        # Per user too: three submissions spread over both processes.
        assert (await submit(a, admin)).status_code == 201
        assert (await submit(b, admin)).status_code == 201
        assert (await submit(a, admin)).status_code == 201
        assert_limited(await submit(b, admin))


@pytest.mark.redis
async def test_api_processes_count_batch_jobs_in_one_window_through_redis(
    db_url: str, tmp_path: Path, redis_url: str
) -> None:
    settings = api_settings(db_url, tmp_path, redis_url=redis_url, rate_limit_jobs="5/minute")
    async with serve(settings) as one, serve(settings) as two:
        ada = await one.api.user("ada@example.com")
        assert (await batch(one.api, ada, 3)).status_code == 201
        assert_limited(await batch(two.api, ada, 3))
        assert (await batch(two.api, ada, 2)).status_code == 201
        assert_limited(await submit(one.api, ada))
        assert await stored(one.api, ada) == 5


async def test_an_unreachable_redis_lets_requests_through(db_url: str, tmp_path: Path) -> None:
    """The limiter fails open (and logs): a Redis outage must not take the API down."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = api_settings(
        db_url, tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", rate_limit_auth="1/minute"
    )
    async with serve(settings) as served:
        assert [await login(served.api.client) for _ in range(3)] == [401, 401, 401]


async def redis_clients(url: str) -> int:
    """How many connections the Redis server has open on the database of `url`."""
    client = aioredis.Redis.from_url(url)
    try:
        database = str(client.connection_pool.connection_kwargs.get("db", 0))
        return sum(1 for c in await client.client_list() if str(c.get("db")) == database) - 1
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_shutdown_closes_the_limiters_redis_connections(
    db_url: str, tmp_path: Path, redis_url: str
) -> None:
    settings = api_settings(db_url, tmp_path, redis_url=redis_url)
    before = await redis_clients(redis_url)
    async with serve(settings) as served:
        assert await login(served.api.client) == 401  # opens the limiter's connection
        assert await redis_clients(redis_url) > before
    assert await redis_clients(redis_url) == before


# ---- the per-account sign-in throttle (issue 14, finding 4) ----------------------------------
async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def check_account_throttle(settings: Any) -> None:
    """Three failures for one account from three addresses, and the account waits; its
    owner's known address still signs in; an unknown account is throttled alike."""
    async with serve(settings) as served:
        api, client_from = served.api, served.client_from
        await api.user("ada@example.com")  # signs in from 127.0.0.1: a known client of ada
        guessers = [client_from(f"198.51.100.{n}") for n in range(1, 6)]
        for guesser in guessers[:3]:
            assert (await sign_in(guesser, "ADA@example.com ", "wrong password")).status_code == 401
        assert_limited(await sign_in(guessers[3], "ada@example.com", "wrong password"))
        assert_limited(await sign_in(guessers[4], "ada@example.com", PASSWORD))
        assert (await sign_in(api.client, "ada@example.com", PASSWORD)).status_code == 200
        # A login nobody has is counted the same way, so the 429 tells nothing.
        for guesser in guessers[:3]:
            assert (await sign_in(guesser, "nobody@example.com", "x")).status_code == 401
        assert_limited(await sign_in(guessers[3], "nobody@example.com", "x"))
        # Other accounts are untouched.
        assert (await sign_in(guessers[4], "bob@example.com", "x")).status_code == 401


async def test_failed_sign_ins_per_account_are_throttled_in_memory(
    db_url: str, tmp_path: Path
) -> None:
    await check_account_throttle(
        api_settings(db_url, tmp_path, rate_limit_login_account="3/minute")
    )


async def test_every_sign_in_door_meets_the_same_account_throttle(
    db_url: str, tmp_path: Path
) -> None:
    """Each door passes its client's throttle to the account service itself (no request-wide
    state), so each must be seen to: after three failures through the API, every other way to
    sign in as that account from a new address waits too, and the dashboard's form as well."""
    settings = api_settings(db_url, tmp_path, rate_limit_login_account="3/minute")
    async with serve(settings) as served:
        await served.api.user("ada@example.com")
        for n in range(3):
            guesser = served.client_from(f"198.51.100.{n}")
            assert (await sign_in(guesser, "ada@example.com", "wrong")).status_code == 401
        attempts = [
            ("/login", {"username": "ada@example.com", "password": PASSWORD}),  # 000
            ("/auth/login", {"email": "ada@example.com", "password": PASSWORD}),  # 001
            ("/api/login/", {"email": "ada@example.com", "password": PASSWORD}),  # 003
            ("/login", {"email": "ada@example.com", "password": PASSWORD}),  # 004
        ]
        for n, (path, body) in enumerate(attempts, start=10):
            assert_limited(await served.client_from(f"198.51.100.{n}").post(path, json=body))
        browser = served.client_from("198.51.100.20")
        form = await browser.get("/dashboard/login")
        r = await browser.post(
            "/dashboard/login",
            data={
                "login": "ada@example.com",
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
            },
        )
        assert r.status_code == 429, r.text
        # the owner's known address is not held back, through any door
        r = await served.api.client.post("/api/login/", json=attempts[2][1])
        assert r.status_code == 200, r.text


@pytest.fixture
async def own_redis_namespace(redis_url: str) -> AsyncIterator[tuple[str, str]]:
    """A Redis URL and a namespace no other test uses: the ``redis_url`` database is emptied
    by every test that starts or ends meanwhile (on another xdist worker), so this test
    keeps its counters in the next database down and removes them afterwards."""
    url = redis_url.rsplit("/", 1)[0] + "/14"
    namespace = f"t{uuid.uuid4().hex}"
    yield url, namespace
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_failed_sign_ins_per_account_are_throttled_through_redis(
    db_url: str, tmp_path: Path, own_redis_namespace: tuple[str, str]
) -> None:
    url, namespace = own_redis_namespace
    settings = api_settings(
        db_url,
        tmp_path,
        rate_limit_login_account="3/minute",
        redis_url=url,
        rate_limit_namespace=namespace,
    )
    await check_account_throttle(settings)


async def charge_twice_then_count(limits: RateLimits, user: str) -> int:
    """A submission that fits, one whose jobs do not, then how many more requests fit."""
    submit, jobs = Charge("5/minute", ("submit", user)), Charge("3/minute", ("jobs", user), cost=2)
    await limits.charge(submit, jobs)
    with pytest.raises(RateLimited):
        await limits.charge(submit, jobs)  # 2 + 2 jobs > 3: refused, and nothing spent
    more = 0
    while more < 10:
        try:
            await limits.charge(submit)
        except RateLimited:
            break
        more += 1
    return more


async def test_a_submission_spends_its_request_and_its_jobs_together_in_memory() -> None:
    limits = RateLimits()
    try:
        assert await charge_twice_then_count(limits, "ada") == 4
    finally:
        await limits.aclose()


@pytest.mark.redis
async def test_a_submission_spends_its_request_and_its_jobs_together_through_redis(
    redis_url: str,
) -> None:
    """One script, one round trip, all or nothing (two checks spent the request window even
    when the jobs window refused)."""
    limits = RateLimits(redis_url)
    try:
        assert await charge_twice_then_count(limits, "ada") == 4
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        keys = sorted(await client.keys("*"))
        await client.aclose()
        assert keys == [
            "conveyor:rl:charge:jobs:ada",
            "conveyor:rl:charge:jobs:ada:n",
            "conveyor:rl:charge:submit:ada",
            "conveyor:rl:charge:submit:ada:n",
        ]
    finally:
        await limits.aclose()


async def test_memory_windows_make_room_as_charges_age_and_forget_idle_keys() -> None:
    """In memory a charge is one entry whatever its cost (a batch of 500 jobs is one), it
    leaves the window when the window has passed, and idle keys are swept away."""
    limits = RateLimits()
    memory = limits._memory
    assert memory is not None
    memory.SWEEP_EVERY_S = 0.0  # sweep on every charge
    try:
        await limits.check("500/second", "jobs", "ada", cost=500)
        with pytest.raises(RateLimited) as refused:
            await limits.check("500/second", "jobs", "ada")
        assert refused.value.details["retry_after"] == 1
        await limits.check("500/second", "jobs", "bob", cost=499)  # per key
        await limits.check("500/second", "jobs", "bob")
        await asyncio.sleep(1.2)
        await limits.check("500/second", "jobs", "ada", cost=500)  # the window has passed
        assert list(memory._windows) == [("jobs", "ada")]  # bob's aged out and was forgotten
    finally:
        await limits.aclose()
