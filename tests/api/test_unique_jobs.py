"""Unique jobs, a reused Idempotency-Key and a run_at in the past, over HTTP on both databases
(docs/flow-control.md: "Unique jobs", "Idempotency keys", "Scheduling rules")."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api, api_settings, running_api
from tests.support.processes import eventually
from tests.support.unique_handlers import MODULE, PERIOD_S

JOBS = "/api/v1/jobs"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(db_url, tmp_path, handler_modules=MODULE, poll_interval=0.1)
    async with running_api(settings) as running:
        yield running


async def post(api: Api, headers: dict[str, str], body: Any, path: str = JOBS) -> httpx.Response:
    return await api.client.post(path, json=body, headers=headers)


async def count(api: Api, headers: dict[str, str]) -> int:
    r = await api.client.get(JOBS, params={"limit": 1000}, headers=headers)
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


async def run_default_queue(api: Api) -> None:
    """Everything queued on `default` run to its end by a burst worker."""
    await api.engine.worker("default", concurrency=4, burst=True).run()


# ---- unique jobs -------------------------------------------------------------------------
async def test_a_duplicate_is_the_live_job_answered_200_and_per_owner(api: Api) -> None:
    ada = await api.user("ada@example.com")
    order = {"type": "unique_order", "payload": {"order_id": "A-1", "note": "first"}}
    first = await post(api, ada, order)
    assert first.status_code == 201, first.text
    assert first.json()["duplicate"] is False
    # Only the declared fields count: another note is the same order.
    again = await post(api, ada, {**order, "payload": {"order_id": "A-1", "note": "second"}})
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["payload"]["note"] == "first"  # the stored job, as it was stored
    other_order = await post(api, ada, {**order, "payload": {"order_id": "A-2"}})
    assert other_order.status_code == 201
    # Another owner's equal order is theirs: never someone else's job.
    bob = await api.user("bob@example.com")
    theirs = await post(api, bob, order)
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert await count(api, ada) == 2


async def test_job_types_show_their_unique_rule(api: Api) -> None:
    ada = await api.user("ada@example.com")
    types = {t["name"]: t for t in (await api.client.get("/api/v1/job-types", headers=ada)).json()}
    assert types["unique_order"]["unique"] == {
        "fields": ["order_id"],
        "period_s": None,
        "states": ["scheduled", "queued", "running", "retrying"],
    }
    assert types["unique_period"]["unique"]["period_s"] == PERIOD_S
    assert "completed" in types["unique_ever"]["unique"]["states"]


async def test_a_batch_with_duplicates_stores_each_key_once(api: Api) -> None:
    ada = await api.user("ada@example.com")
    existing = (await post(api, ada, {"type": "unique_order", "payload": {"order_id": "1"}})).json()
    jobs = [
        {"type": "unique_order", "payload": {"order_id": "1"}},  # the stored one
        {"type": "unique_order", "payload": {"order_id": "2"}},
        {"type": "unique_order", "payload": {"order_id": "2"}},  # the one just above
        {"type": "noop"},
    ]
    r = await post(api, ada, {"jobs": jobs}, f"{JOBS}/batch")
    assert r.status_code == 201, r.text
    out = r.json()
    assert [job["duplicate"] for job in out] == [True, False, True, False]
    assert out[0]["id"] == existing["id"]
    assert out[2]["id"] == out[1]["id"]
    assert await count(api, ada) == 3


async def test_after_the_job_completes_default_states_make_a_new_one(api: Api) -> None:
    ada = await api.user("ada@example.com")
    order = {"type": "unique_order", "payload": {"order_id": "B-1"}}
    first = (await post(api, ada, order)).json()
    await run_default_queue(api)
    done = (await api.client.get(f"{JOBS}/{first['id']}", headers=ada)).json()
    assert done["state"] == "completed"
    second = await post(api, ada, order)
    assert second.status_code == 201 and second.json()["duplicate"] is False
    assert second.json()["id"] != first["id"]


async def test_with_completed_in_its_states_a_done_job_stays_the_one(api: Api) -> None:
    ada = await api.user("ada@example.com")
    order = {"type": "unique_ever", "payload": {"order_id": "C-1"}}
    first = (await post(api, ada, order)).json()
    await run_default_queue(api)
    again = await post(api, ada, order)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True and again.json()["id"] == first["id"]
    assert again.json()["state"] == "completed"


def _period() -> int:
    return math.floor(time.time() / PERIOD_S)


async def test_a_period_makes_the_next_periods_job_a_new_one(api: Api) -> None:
    ada = await api.user("ada@example.com")
    tries = 0
    while True:  # two submits inside one period (the server's clock is this machine's)
        # A fresh key per try: a try that straddled a boundary stored a job in the new
        # period, which the next try's first submit would find (a 200, not a 201).
        tries += 1
        order = {"type": "unique_period", "payload": {"order_id": f"D-{tries}"}, "delay": 3600}
        before = _period()
        first, same = await post(api, ada, order), await post(api, ada, order)
        if _period() == before:
            break
    assert (first.status_code, same.status_code) == (201, 200)
    assert same.json()["duplicate"] is True and same.json()["id"] == first.json()["id"]
    await eventually(lambda: _period() > before, timeout=10 * PERIOD_S, what="the next period")
    following = await post(api, ada, order)
    assert following.status_code == 201 and following.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("how", ["failed", "cancelled"])
async def test_a_retry_whose_key_a_live_job_took_is_409(api: Api, how: str) -> None:
    ada = await api.user("ada@example.com")
    payload = {"order_id": "E-1", "fail": how == "failed"}
    old = (await post(api, ada, {"type": "unique_order", "payload": payload})).json()
    if how == "failed":
        await run_default_queue(api)
    else:
        r = await api.client.post(f"{JOBS}/{old['id']}/cancel", headers=ada)
        assert r.status_code == 200, r.text
    state = (await api.client.get(f"{JOBS}/{old['id']}", headers=ada)).json()["state"]
    assert state == how
    live = await post(api, ada, {"type": "unique_order", "payload": {"order_id": "E-1"}})
    assert live.status_code == 201, live.text  # the old one no longer holds the key

    retried = await api.client.post(f"{JOBS}/{old['id']}/retry", headers=ada)

    assert retried.status_code == 409, retried.text
    assert retried.json()["error"]["code"] == "unique_key_taken"
    still = (await api.client.get(f"{JOBS}/{old['id']}", headers=ada)).json()
    assert still["state"] == how
    # A bulk retry skips it (and retries the others).
    bulk = {"action": "retry", "ids": [old["id"]]}
    r = await post(api, ada, bulk, f"{JOBS}/bulk")
    assert r.status_code == 200, r.text
    assert (r.json()["changed"], r.json()["skipped"]) == (0, 1)
    # Once the live one is gone, the retry goes through.
    r = await api.client.post(f"{JOBS}/{live.json()['id']}/cancel", headers=ada)
    assert r.status_code == 200, r.text
    retried = await api.client.post(f"{JOBS}/{old['id']}/retry", headers=ada)
    assert retried.status_code == 200, retried.text


# ---- idempotency keys --------------------------------------------------------------------
async def test_a_key_reused_with_another_body_is_409_and_stores_nothing(api: Api) -> None:
    ada = await api.user("ada@example.com")
    keyed = {**ada, "Idempotency-Key": "k-1"}
    first = await post(api, keyed, {"type": "noop", "payload": {}})
    assert first.status_code == 201
    for other in (
        {"type": "sleep", "payload": {"seconds": 0}},  # another type
        {"type": "noop", "queue": "elsewhere"},  # another queue
        {"type": "unique_order", "payload": {"order_id": "x"}},
    ):
        r = await post(api, keyed, other)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "idempotency_key_reused"
    same = await post(api, keyed, {"type": "noop", "priority": 5})  # options other than those
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    assert same.json()["duplicate"] is False
    assert await count(api, ada) == 1


async def test_a_batch_reusing_a_key_is_409_and_stores_none_of_it(api: Api) -> None:
    ada = await api.user("ada@example.com")
    first = await post(api, ada, {"type": "noop", "idempotency_key": "k-2"})
    assert first.status_code == 201
    jobs = [
        {"type": "noop", "payload": {}},
        {"type": "sleep", "payload": {"seconds": 0}, "idempotency_key": "k-2"},
    ]
    r = await post(api, ada, {"jobs": jobs}, f"{JOBS}/batch")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    # The same key twice in one batch with two bodies: refused as well.
    twice = [
        {"type": "noop", "idempotency_key": "k-3"},
        {"type": "sleep", "idempotency_key": "k-3"},
    ]
    r = await post(api, ada, {"jobs": twice}, f"{JOBS}/batch")
    assert r.status_code == 409, r.text
    assert await count(api, ada) == 1


async def test_a_reused_key_fails_only_its_own_request_in_a_shared_commit(api: Api) -> None:
    """Concurrent submits share one transaction (services/intake.py): the group is rolled back
    and each request tried alone, so only the one reusing a key is refused."""
    ada = await api.user("ada@example.com")
    keyed = {**ada, "Idempotency-Key": "k-4"}
    assert (await post(api, keyed, {"type": "noop"})).status_code == 201
    answers = await asyncio.gather(
        *(post(api, ada, {"type": "noop", "payload": {"n": n}}) for n in range(8)),
        post(api, keyed, {"type": "noop", "payload": {"n": "other"}}),
    )
    assert [a.status_code for a in answers] == [201] * 8 + [409]
    assert answers[-1].json()["error"]["code"] == "idempotency_key_reused"
    assert await count(api, ada) == 9


# ---- run_at in the past ------------------------------------------------------------------
def _ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


async def test_a_run_at_in_the_past_beyond_the_tolerance_is_422(api: Api) -> None:
    ada = await api.user("ada@example.com")
    tolerance = api.settings.run_at_past_tolerance
    late = {"type": "noop", "run_at": _ago(tolerance + 600)}
    r = await post(api, ada, late)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    assert r.json()["error"]["details"]["field"] == "run_at"
    r = await post(api, ada, {"jobs": [{"type": "noop"}, late]}, f"{JOBS}/batch")
    assert r.status_code == 422, r.text
    assert await count(api, ada) == 0
    # Within the tolerance (a client's clock a little ahead of the server's): accepted.
    ok = await post(api, ada, {"type": "noop", "run_at": _ago(tolerance / 4)})
    assert ok.status_code == 201, ok.text
    assert ok.json()["state"] == "queued"
