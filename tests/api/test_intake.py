"""Single submits committed in groups (services/intake.py): concurrent requests share a
transaction and a commit, each is answered after it, and none fails because of another."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, text

from conveyor.store.tables import jobs
from tests.api.conftest import PASSWORD, Api
from tests.support.processes import eventually


async def submit(api: Api, headers: dict[str, str], **body: Any) -> httpx.Response:
    extra = {"Idempotency-Key": body.pop("key")} if "key" in body else {}
    return await api.client.post(
        "/api/v1/jobs", json={"type": "noop", **body}, headers={**headers, **extra}
    )


async def stored(api: Api, **where: Any) -> int:
    """Jobs committed, counted on a connection of its own."""
    query = select(func.count()).select_from(jobs)
    for column, value in where.items():
        query = query.where(jobs.c[column] == value)
    async with api.engine.backend.db.read() as conn:
        return int(await conn.scalar(query) or 0)


async def test_concurrent_submits_share_commits_and_are_each_answered_once_durable(
    api: Api,
) -> None:
    ada = await api.user("ada@example.com")
    groups = api_intake(api).groups
    answers = await asyncio.gather(*(submit(api, ada, payload={"n": n}) for n in range(40)))
    assert [r.status_code for r in answers] == [201] * 40
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 40
    assert api_intake(api).groups - groups < 40  # coalesced: fewer commits than requests
    # Answered after their commit: each job is there for any other connection to read.
    assert await stored(api, type="noop") == 40
    for r in answers[:3]:
        again = await api.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=ada)
        detail = {**again.json(), "duplicate": False}  # a submit's answer says it
        assert detail.pop("waiting_reason")["kind"] == "turn"  # the detail says why it waits
        assert detail.pop("limits") == {}  # and lists the job's limit keys (none here)
        assert detail == r.json()


async def test_one_idempotency_key_in_one_group_makes_one_job(api: Api) -> None:
    ada = await api.user("ada@example.com")
    answers = await asyncio.gather(*(submit(api, ada, key="order-7") for _ in range(20)))
    assert sorted(r.status_code for r in answers) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert await stored(api, idempotency_key="order-7") == 1


async def test_a_submission_the_database_refuses_fails_alone(api: Api) -> None:
    """A statement error rolls the group back; its other requests are stored all the same."""
    await refuse_payloads_that_explode(api)
    ada = await api.user("ada@example.com")
    requests = [submit(api, ada, payload={"n": n}) for n in range(10)]
    requests.insert(5, submit(api, ada, payload={"explode": True}))
    answers = await asyncio.gather(*requests, return_exceptions=True)
    assert [status(r) for r in answers] == [201] * 5 + [500] + [201] * 5
    assert await stored(api, type="noop") == 10


async def test_an_ended_session_or_revoked_key_is_refused_within_a_group(api: Api) -> None:
    """The session (and key) checks run in the transaction that inserts: a signed-out token
    is refused even though its signature is valid, and its neighbours go through."""
    ada = await api.user("ada@example.com")
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    ended = r.json()
    out = await api.client.post(
        "/api/v1/auth/logout", json={"refresh_token": ended["refresh_token"]}
    )
    assert out.status_code == 204
    gone = {"Authorization": f"Bearer {ended['access_token']}"}
    key = await api.client.post("/api/v1/me/api-keys", json={"name": "ci"}, headers=ada)
    revoked = {"Authorization": f"Bearer {key.json()['key']}"}
    assert (await submit(api, revoked)).status_code == 201  # known to the process now
    deleted = await api.client.delete(f"/api/v1/me/api-keys/{key.json()['id']}", headers=ada)
    assert deleted.status_code == 204
    bob = await api.user("bob@example.com")

    answers = await asyncio.gather(
        *(submit(api, h, payload={"i": i}) for i, h in enumerate([ada, gone, bob, revoked] * 5))
    )
    assert [r.status_code for r in answers] == [201, 401, 201, 401] * 5
    assert await stored(api, type="noop") == 11  # 10 now, and the key's first


async def test_an_api_key_submits_and_answers_like_a_token(api: Api) -> None:
    ada = await api.user("ada@example.com")
    made = await api.client.post("/api/v1/me/api-keys", json={"name": "ci"}, headers=ada)
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    answers = await asyncio.gather(*(submit(api, key, payload={"n": n}) for n in range(10)))
    assert [r.status_code for r in answers] == [201] * 10
    by_token = await submit(api, ada)
    assert by_token.json()["owner_id"] == answers[0].json()["owner_id"]
    listed = await api.client.get("/api/v1/me/api-keys", headers=ada)
    assert listed.json()[0]["last_used_at"] is not None


async def test_a_batch_in_a_group_is_still_all_or_nothing(api: Api) -> None:
    await refuse_payloads_that_explode(api)
    ada = await api.user("ada@example.com")
    bad = {"jobs": [{"type": "noop"}, {"type": "noop", "payload": {"explode": True}}]}
    good = {"jobs": [{"type": "noop"}, {"type": "noop"}]}
    answers = await asyncio.gather(
        api.client.post("/api/v1/jobs/batch", json=good, headers=ada),
        api.client.post("/api/v1/jobs/batch", json=bad, headers=ada),
        submit(api, ada),
        return_exceptions=True,
    )
    assert [status(r) for r in answers] == [201, 500, 201]
    assert await stored(api, type="noop") == 3


def status(answer: httpx.Response | BaseException) -> int:
    """The status; the test transport raises what a server answers 500 to (its real error)."""
    if isinstance(answer, BaseException):
        assert "boom" in str(answer), repr(answer)
        return 500
    return answer.status_code


def api_intake(api: Api) -> Any:
    """The app's intake, through the lifespan's context (the doors' own handle)."""
    transport = api.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.conveyor.intake  # type: ignore[attr-defined]


async def refuse_payloads_that_explode(api: Api) -> None:
    """A real database refusal for one kind of job: a trigger that aborts its insert."""
    db = api.engine.backend.db
    async with db.write() as conn:
        if db.dialect == "postgresql":
            await conn.execute(
                text(
                    "CREATE FUNCTION explode() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.payload ? 'explode' THEN RAISE EXCEPTION 'boom'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER explode BEFORE INSERT ON jobs "
                    "FOR EACH ROW EXECUTE FUNCTION explode()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER explode BEFORE INSERT ON jobs "
                    "WHEN json_extract(NEW.payload, '$.explode') IS NOT NULL "
                    "BEGIN SELECT RAISE(ABORT, 'boom'); END"
                )
            )


async def test_a_group_waiting_on_the_database_does_not_hold_up_the_next(api: Api) -> None:
    """PostgreSQL: two groups commit at once (services/intake.py IN_FLIGHT). While one waits
    on a row lock (another transaction inserted the same idempotency key and has not
    committed), a later submit is answered; the first is answered once the lock goes. With
    one group at a time, the later submit waited behind it."""
    if not api.settings.database_url.startswith("postgres"):
        pytest.skip("SQLite has one writer: one group at a time")
    ada, me, other = await _ada_and_another_session(api)
    try:
        held = await _holding_key(other, me, "k")
        blocked = asyncio.create_task(submit(api, ada, key="k"))

        async def waiting_on_the_lock() -> bool:
            return await _lock_waits(other) > 0

        await eventually(waiting_on_the_lock, timeout=20, what="the group's wait on the key")
        free = await asyncio.wait_for(submit(api, ada, payload={"n": 1}), 20)
        assert free.status_code == 201 and not blocked.done()
        await held.rollback()
        answer = await asyncio.wait_for(blocked, 20)
        assert answer.status_code == 201
    finally:
        await other.close()


async def test_a_group_cancelled_mid_transaction_answers_every_request(api: Api) -> None:
    """The groups' tasks cancelled while a transaction waits (the process stopping): the
    requests of the groups in flight and those waiting behind them are each answered 503
    at once, nothing stored; before, the requests being committed waited for an answer
    that never came."""
    if not api.settings.database_url.startswith("postgres"):
        pytest.skip("a transaction that waits on another's row lock: PostgreSQL's")
    ada, me, other = await _ada_and_another_session(api)
    intake = api_intake(api)
    try:
        held = await _holding_key(other, me, "k")

        async def waiting_on_the_lock() -> bool:
            return await _lock_waits(other) > 0

        first = asyncio.create_task(submit(api, ada, key="k"))
        await eventually(waiting_on_the_lock, timeout=20, what="the group's wait on the key")
        blocked = [first]
        while len(blocked) < 3:  # the other group in flight, then one left waiting
            blocked.append(asyncio.create_task(submit(api, ada, key="k")))
            await asyncio.sleep(0.2)
        assert len(intake._waiting) == 1 and not any(t.done() for t in blocked)
        for task in intake._committing:
            task.cancel()
        answers = await asyncio.wait_for(asyncio.gather(*blocked), 20)
        assert [a.status_code for a in answers] == [503, 503, 503]
        await held.rollback()
        assert await stored(api, idempotency_key="k") == 0
    finally:
        await other.close()


async def _holding_key(other: asyncpg.Connection, owner: str, key: str) -> Any:
    """A transaction of `other`'s, open, that has inserted a job of `owner` with the
    idempotency key `key`: a submit of that key waits for it (ON CONFLICT)."""
    held = other.transaction()
    await held.start()
    await other.execute(
        "INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt,"
        " max_attempts, run_at, progress, errors, tags, created_at, idempotency_key)"
        " VALUES ('held', $1, 'default', 'noop', '{}', 0, 'queued', 0, 3, now(), 0,"
        " '[]', '[]', now(), $2)",
        owner,
        key,
    )
    return held


async def _ada_and_another_session(api: Api) -> tuple[dict[str, str], str, asyncpg.Connection]:
    """Ada's headers and id, and a connection of the test's own to the app's database."""
    ada = await api.user("ada@example.com")
    me = (await api.client.get("/api/v1/me", headers=ada)).json()["id"]
    dsn = api.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    return ada, me, await asyncpg.connect(dsn)


async def _lock_waits(other: asyncpg.Connection) -> int:
    """Sessions of the app's database waiting on a lock."""
    found = await other.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"
    )
    return int(found)
