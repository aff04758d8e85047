"""The dashboard's cookie-authenticated stream over a real socket on each database: a user's
stream carries their own jobs' events and none of another user's; an admin's carries both."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing

import httpx

from conveyor.services.jobs import Submission
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD
from tests.api.test_sse import Message, collect
from tests.dashboard.conftest import Served, sign_in

STREAM = {"Accept": "text/event-stream"}


async def _browser(served: Served, login: str, password: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=served.base, timeout=10, trust_env=False)
    await sign_in(client, login, password)
    return client


def _completed(job_id: str) -> Callable[[list[Message]], bool]:
    return lambda seen: any(m.job_id == job_id and m.event == "completed" for m in seen)


async def test_each_stream_carries_only_its_owners_events(served: Served) -> None:
    engine = served.api.engine
    a = await engine.accounts.create_user("a@example.com", PASSWORD)
    b = await engine.accounts.create_user("b@example.com", PASSWORD)
    browser_b = await _browser(served, "b@example.com", PASSWORD)
    browser_admin = await _browser(served, ADMIN_EMAIL, ADMIN_PASSWORD)
    async with (
        aclosing(browser_b),
        aclosing(browser_admin),
        browser_b.stream("GET", "/dashboard/events", headers=STREAM) as stream_b,
        browser_admin.stream("GET", "/dashboard/events", headers=STREAM) as stream_admin,
    ):
        assert stream_b.status_code == 200
        assert stream_b.headers["content-type"].startswith("text/event-stream")
        of_a = [await engine.jobs.submit(Submission("noop", {}), a.id) for _ in range(3)]
        of_b = await engine.jobs.submit(Submission("noop", {}), b.id)
        seen_b: list[Message] = await collect(stream_b, _completed(of_b.id))
        seen_admin = await collect(
            stream_admin,
            lambda seen: all(_completed(j.id)(seen) for j in [*of_a, of_b]),
        )
    assert {m.job_id for m in seen_b} == {of_b.id}
    assert {m.job_id for m in seen_admin} == {of_b.id, *(j.id for j in of_a)}


async def test_a_job_stream_of_another_users_job_is_not_found(served: Served) -> None:
    engine = served.api.engine
    a = await engine.accounts.create_user("a@example.com", PASSWORD)
    await engine.accounts.create_user("b@example.com", PASSWORD)
    job = await engine.jobs.submit(Submission("noop", {}), a.id)
    async with aclosing(await _browser(served, "b@example.com", PASSWORD)) as browser_b:
        r = await browser_b.get(f"/dashboard/events?job={job.id}", headers=STREAM)
        assert r.status_code == 404
    async with httpx.AsyncClient(base_url=served.base, trust_env=False) as anonymous:
        r = await anonymous.get("/dashboard/events", headers=STREAM)
        assert r.status_code == 401
