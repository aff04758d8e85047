"""Limits chosen at submit (docs/flow-control.md): a job type declares `submit_limits`, a
submit names which apply and with what key (`limits: {name: key}`), stored as declared
limits' keys are, so the claim enforces them unchanged. Both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.domain.flow import Concurrency, Rate
from conveyor.errors import ConfigurationError
from conveyor.store.tables import job_limits, jobs
from conveyor.worker.blueprint import Blueprint
from tests.api.conftest import Api, api_settings, running_api

HANDLERS = "tests.support.flow_handlers"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(db_url, tmp_path, handler_modules=HANDLERS)
    async with running_api(settings) as running:
        await running.engine.jobs.define_limits()  # as an API process does at start
        yield running


async def stored(api: Api) -> tuple[int, list[tuple[str, str, str]], dict[str, bool]]:
    """Jobs stored, their limit rows (job, name, key) and their `limited` flags."""
    mine = jobs.c.type.in_(["partner_sync", "per_customer"])  # not the accounts' mail jobs
    async with api.engine.backend.db.read() as conn:
        count = (await conn.execute(select(func.count()).where(mine))).scalar_one()
        rows = (await conn.execute(select(job_limits))).all()
        flags = dict((await conn.execute(select(jobs.c.id, jobs.c.limited).where(mine))).all())
    return count, sorted((r.job_id, r.name, r.key) for r in rows), flags


def body(limits: Any = None, type: str = "partner_sync") -> dict[str, Any]:
    out: dict[str, Any] = {"type": type, "payload": {}}
    if limits is not None:
        out["limits"] = limits
    return out


async def test_a_submit_puts_its_job_under_the_limits_it_names(api: Api) -> None:
    ada = await api.user("ada@example.com")
    r = await api.client.post(
        "/api/v1/jobs", json=body({"per_account": "acct-1", "partner_api": ""}), headers=ada
    )
    assert r.status_code == 201, r.text
    first = r.json()["id"]
    plain = await api.client.post("/api/v1/jobs", json=body(), headers=ada)
    assert plain.status_code == 201, plain.text
    _, rows, flags = await stored(api)
    assert rows == sorted([(first, "per_account", "acct-1"), (first, "partner_api", "")])
    assert flags == {first: True, plain.json()["id"]: False}
    shown = await api.client.get(f"/api/v1/jobs/{first}", headers=ada)
    assert shown.json()["limits"] == {"per_account": "acct-1", "partner_api": ""}
    plain_shown = await api.client.get(f"/api/v1/jobs/{plain.json()['id']}", headers=ada)
    assert plain_shown.json()["limits"] == {}
    types = (await api.client.get("/api/v1/job-types", headers=ada)).json()
    by_name = {t["name"]: t for t in types}
    assert by_name["partner_sync"]["submit_limits"] == ["per_account", "partner_api"]
    assert by_name["per_customer"]["submit_limits"] == []


async def test_the_claim_enforces_a_limit_chosen_at_submit(api: Api) -> None:
    """per_account is 1 per key: of two jobs for acct-1 one starts, acct-2's starts too."""
    ada = await api.user("ada@example.com")
    batch = {"jobs": [body({"per_account": k}) for k in ("acct-1", "acct-1", "acct-2")]}
    r = await api.client.post("/api/v1/jobs/batch", json=batch, headers=ada)
    assert r.status_code == 201, r.text
    ids = [j["id"] for j in r.json()]
    claimed = await api.engine.backend.claim("w", ["default"], 10, 30)
    assert sorted(j.id for j in claimed) == sorted([ids[0], ids[2]])
    waiting = (await api.client.get(f"/api/v1/jobs/{ids[1]}", headers=ada)).json()
    assert waiting["waiting_reason"]["kind"] == "limit"
    assert (waiting["waiting_reason"]["limit"], waiting["waiting_reason"]["key"]) == (
        "per_account",
        "acct-1",
    )


@pytest.mark.parametrize(
    ("submitted", "field", "words"),
    [
        (body({"elsewhere": "x"}), "limits", "does not allow limit 'elsewhere'"),
        (
            body({"per_account": "x"}, type="per_customer") | {"payload": {"customer": "c"}},
            "limits",
            "allows no limits at submit",
        ),
        (body({"per_account": "k" * 201}), "limits", "longer than 200"),
    ],
)
async def test_a_limit_the_type_does_not_allow_is_422_and_stores_nothing(
    api: Api, submitted: dict[str, Any], field: str, words: str
) -> None:
    ada = await api.user("ada@example.com")
    r = await api.client.post("/api/v1/jobs", json=submitted, headers=ada)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["details"]["field"] == field
    batch = {"jobs": [body({"per_account": "fine"}), submitted]}
    r = await api.client.post("/api/v1/jobs/batch", json=batch, headers=ada)
    assert r.status_code == 422, r.text
    assert await stored(api) == (0, [], {})


async def test_a_key_that_is_not_a_string_is_refused_by_the_schema(api: Api) -> None:
    ada = await api.user("ada@example.com")
    r = await api.client.post("/api/v1/jobs", json=body({"per_account": 5}), headers=ada)
    assert r.status_code == 422, r.text
    assert (await stored(api))[0] == 0


async def test_the_openapi_documents_the_field(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    field = schema["components"]["schemas"]["JobCreate"]["properties"]["limits"]
    assert "submit_limits" in field["description"]


def test_a_submit_limit_is_declared_without_a_key_and_under_a_name_of_its_own() -> None:
    bp = Blueprint()
    with pytest.raises(ConfigurationError, match="takes its key from the submit"):
        bp.job("a", submit_limits=(Concurrency("x", 1, key="owner"),))
    with pytest.raises(ConfigurationError, match="appears twice"):
        bp.job("b", limits=(Concurrency("x", 1),), submit_limits=(Rate("x", 1, 1.0),))


def test_a_limit_may_not_take_the_built_in_running_quotas_name() -> None:
    """`quota.running` is the built-in per-owner running quota (its size is each user's
    cap): a job type's limit under that name would share its slots and its definition."""
    bp = Blueprint()
    with pytest.raises(ConfigurationError, match="reserved"):
        bp.job("a", limits=(Concurrency("quota.running", 1),))
    with pytest.raises(ConfigurationError, match="reserved"):
        bp.job("b", submit_limits=(Rate("quota.other", 1, 1.0),))
