"""Property-based run of every operation in /openapi.json (schemathesis 4, pytest
integration) with EVERY check schemathesis has, the stateful phase included, signed in as a
verified user and as an admin, on SQLite and PostgreSQL. Any failure fails the test.

How it is wired:
- The schema is the app's own OpenAPI, built at import (it does not depend on the
  database). Its ASGI app is `PROXY`, which forwards to the app of the current database:
  schemathesis runs the app's lifespan in its own event-loop thread and restarts it for
  each operation, so the app is built fresh by the fixture, not at import.
- One database per kind and one app per (kind, role) for the whole module.
- Bounded and reproducible: a few examples per operation from every phase, derandomized, no
  example database; `STATEFUL` scenarios of linked calls, run by tests/support/stateful.py
  (the database keeps each scenario's changes, which hypothesis' replays would otherwise
  report as flaky generation). The environment variables `FUZZ_EXAMPLES` and
  `FUZZ_STATEFUL` raise both for a long run, `FUZZ_SEED` moves the stateful runs' seeds, and
  `FUZZ_REPORT` names a file that gets one line per (database, role): the cases called and
  the seconds taken, and the stateful scenarios and hypothesis runs they took. The
  unbounded run in docs/design.md (As built, "API contract") was made that way.
- NUL characters are not generated: the body-limits middleware refuses them anywhere (422),
  which its own tests cover; a pattern on every string would only say that again.

One allowance, and only for `positive_data_acceptance`: an operation in `SEMANTIC` checks
a rule a JSON Schema cannot state (a code that was mailed, a password that is current and
not a common one, a host that resolves, a payload that fits the job type named beside it)
and refuses schema-valid input that breaks it. The allowance names the answer (status, error
code and field) and the reason; any other refusal of valid data still fails, and every other
check holds for these operations too.
"""

from __future__ import annotations

import os
import re
import time
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.transport import Response
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
    response_schema_conformance,
)
from starlette.types import ASGIApp

from conveyor.api.schemas import EMAIL_PATTERN
from conveyor.auth.passwords import configure_argon2
from conveyor.server import create_app
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Api, api_settings
from tests.conftest import fresh_database
from tests.support.stateful import run_stateful

# schemathesis's own string strategies trip this hypothesis warning (not our code).
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
STATEFUL = int(os.environ.get("FUZZ_STATEFUL", "25"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))  # the stateful runs' first seed
REPORT = os.environ.get("FUZZ_REPORT")
CASES: Counter[str] = Counter()  # cases called per "database role", for FUZZ_REPORT
ALLOWED: Counter[str] = Counter()  # "database role: operation answer" the allowances let by
STATEFUL_RUNS: dict[str, str] = {}  # "database role" -> "N scenarios in K hypothesis runs"

COMMON = "a new password is not one of the 10,000 most common (a list, not a pattern)"
TYPE = "the type must be registered here: handlers come from configuration, not the schema"
HOOK = "a callback_url must resolve to a public address"
CURSOR = "a cursor pages newest first, so not with sort/offset: no JSON Schema spans parameters"
CRON = "a valid cron expression (croniter's grammar): no pattern says it"
PAST = "a run_at no further in the past than the tolerance: no schema says 'after now'"
REUSED = "an idempotency key names one request: another request with it is refused"
GRAPH = (
    "a workflow's graph (step names unique and well-formed, dependencies known, no cycle) and "
    "each step's registered type and payload: no JSON Schema says them; the field is per step"
)
LIMITS = "a submit's limits must be among its type's submit_limits: handlers, not the schema"
SEMANTIC: dict[str, dict[str, str]] = {  # operation -> {"status code[:field]": reason}
    "POST /api/v1/auth/register": {"422 password_policy": COMMON},
    "POST /register": {"422 password_policy": COMMON},
    "POST /api/register/": {"422 password_policy": COMMON},
    "POST /auth/register": {"422 password_policy": COMMON},
    "POST /api/v1/admin/users": {"422 password_policy": COMMON},
    "POST /api/v1/auth/verify": {"422 invalid_input": "the code must be the one mailed"},
    "POST /api/verify-otp/": {"422 invalid_input": "the code must be the one mailed"},
    "POST /api/v1/me/password": {
        "422 invalid_input:old_password": "old_password must be the current password",
        "422 password_policy": COMMON,
    },
    "POST /api/v1/me/api-keys": {
        "422 invalid_input:name": "printable is Unicode's categories (str.isprintable): no "
        "pattern without \\p{...} classes says it",
    },
    "POST /api/v1/jobs": {
        "422 unknown_job_type": TYPE,
        "422 invalid_input:callback_url": HOOK,
        "422 invalid_input:run_at": PAST,
        "422 invalid_input:limits": LIMITS,
        "409 idempotency_key_reused": REUSED,
    },
    "POST /api/v1/jobs/batch": {
        "422 unknown_job_type": TYPE,
        "422 invalid_input:callback_url": HOOK,
        "422 invalid_input:run_at": PAST,
        "422 invalid_input:limits": LIMITS,
        "409 idempotency_key_reused": REUSED,
    },
    "GET /api/v1/jobs": {"422 invalid_input:cursor": CURSOR},
    "POST /api/v1/workflows": {"422 *": GRAPH},
    "POST /api/v1/schedules": {
        "422 unknown_job_type": TYPE,
        "422 invalid_input:cron": CRON,
    },
    "PATCH /api/v1/schedules/{schedule_id}": {
        "422 unknown_job_type": TYPE,
        "422 invalid_input:cron": CRON,
    },
    "POST /api/v1/webhooks": {"422 invalid_input:url": "the URL must resolve to a public address"},
    "PATCH /api/v1/webhooks/{webhook_id}": {
        "422 invalid_input:url": "the URL must resolve to a public address"
    },
    "POST /jobs": {
        "422 unknown_job_type": TYPE,
        "422 invalid_input": "the payload must fit the named type's own model (per type)",
    },
    "POST /api/jobs/": {"400 *": "the scheduled time is not in the past"},
    "POST /api/jobs": {"400 *": "reference 002 checks its visits (count, dates) in its own words"},
    "GET /api/status": {"400 *": "reference 002 answers an unknown jobid with 400, as it does"},
}


class Proxy:
    """The ASGI app schemathesis calls; it forwards to the app of the current database."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None
        self.label = ""  # "database role" of the current app, to count cases

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.target is not None, "the fuzz_headers fixture sets the app"
        await self.target(scope, receive, send)


PROXY = Proxy()
_openapi = create_app(api_settings("sqlite:///unused.db", Path("/nonexistent"))).openapi()
schema = schemathesis.openapi.from_dict(_openapi)
schema.app = PROXY
schema.config.phases.update(phases=["examples", "coverage", "fuzzing", "stateful"])
schema.config.generation.update(allow_x00=False)
load_all_checks()
HYPOTHESIS = settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def answer_of(response: Any) -> tuple[str, str]:
    """("422", "invalid_input:name") for a response in the API's error shape."""
    try:
        error = response.json()["error"]
        field = error.get("details", {}).get("field") if isinstance(error, dict) else None
        code = f"{error['code']}:{field}" if field else str(error["code"])
    except (ValueError, KeyError, TypeError, AttributeError):
        code = ""
    return str(response.status_code), code


@schemathesis.check
def accepts_valid_data(ctx: Any, response: Any, case: schemathesis.Case[Any]) -> bool | None:
    """`positive_data_acceptance`, but for the answers `SEMANTIC` names for the operation."""
    allowed = SEMANTIC.get(f"{case.operation.method.upper()} {case.operation.path}", {})
    body = case.body if isinstance(case.body, dict) else {}
    if case.operation.path == "/api/v1/schedules" and "workflow" in body:
        allowed = SEMANTIC["POST /api/v1/workflows"]  # a template: what its submit is allowed
    if case.meta is None or not case.meta.generation.mode.is_positive:
        allowed = {}  # a negative case: positive_data_acceptance has nothing to say
    status, code = answer_of(response)
    for answer in (f"{status} {code}", f"{status} *"):
        if answer in allowed:
            ALLOWED[f"{PROXY.label}: {case.operation.label} {status} {code}"] += 1
            return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


# Every built-in check (all 14), positive_data_acceptance through `accepts_valid_data`.
ALL_CHECKS: list[Any] = [c for c in CHECKS.get_all() if c is not positive_data_acceptance]
assert accepts_valid_data in ALL_CHECKS and len(ALL_CHECKS) == 14


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """tests/conftest.py's `db_url`, for the whole module."""
    with fresh_database(request.param, request, tmp_path_factory.mktemp("fuzz")) as url:
        yield url


@pytest.fixture(scope="module", params=["user", "admin"])
def fuzz_headers(
    request: pytest.FixtureRequest, fuzz_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Points PROXY at a fresh app on `fuzz_db`; the Authorization header of a verified user
    or of the admin (an API key: it outlives the access token, and no fuzzed call ends it)."""
    configure_argon2(time_cost=1, memory_kib=1024)  # as the root conftest does per test
    settings_ = api_settings(
        fuzz_db,
        tmp_path_factory.mktemp("fuzz-app"),
        email_verification=False,
        db_request_timeout=60,  # the contract is under test, not a starved machine's 503s
    )
    PROXY.target = create_app(settings_)
    label = f"{'sqlite' if fuzz_db.startswith('sqlite') else 'postgres'} {request.param}"
    PROXY.label, started = label, time.monotonic()
    if request.param == "admin":
        credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    else:
        credentials = {"email": "fuzz@example.com", "password": PASSWORD}
    with asgi.get_client(PROXY) as client:
        if request.param == "user":
            r = client.post("http://testserver/api/v1/auth/register", json=credentials)
            assert r.status_code == 202, r.text
        r = client.post("http://testserver/api/v1/auth/login", json=credentials)
        assert r.status_code == 200, r.text
        token = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = client.post(
            "http://testserver/api/v1/me/api-keys", json={"name": "fuzz"}, headers=token
        )
        assert r.status_code == 201, r.text
    try:
        yield {"Authorization": f"Bearer {r.json()['key']}"}
    finally:
        asgi.shutdown_lifespans()  # the plugin does this after each test; to be sure
        PROXY.target = None
        configure_argon2()
        if REPORT:
            with open(REPORT, "a", encoding="utf-8") as out:
                elapsed = time.monotonic() - started
                out.write(f"{label}: {CASES[label]} cases in {elapsed:.0f} s\n")
                if label in STATEFUL_RUNS:
                    out.write(f"  stateful: {STATEFUL_RUNS[label]}\n")
                for answer, n in sorted(ALLOWED.items()):
                    if answer.startswith(f"{label}:"):
                        out.write(f"  allowed {n}x {answer.removeprefix(label + ': ')}\n")


def credential(case: schemathesis.Case[Any], fuzz_headers: dict[str, str]) -> dict[str, str]:
    """The real credential in place of the bearer token schemathesis made up; none when a
    case leaves `Authorization` out on purpose (a negative case: 401 is the right answer).
    Supplying it there turned such a case, with undeclared query parameters beside, into an
    accepted "invalid" request (the unbounded run's GET /api/v1/jobs, stats, throughput,
    webhooks, admin/users)."""
    sent = any(name.lower() == "authorization" for name in case.headers or {})
    return fuzz_headers if sent else {}


@schema.parametrize()
@settings(HYPOTHESIS, max_examples=EXAMPLES)
def test_every_check_passes(case: schemathesis.Case[Any], fuzz_headers: dict[str, str]) -> None:
    CASES[PROXY.label] += 1
    case.call_and_validate(headers=credential(case, fuzz_headers), checks=ALL_CHECKS)


def test_stateful_every_check_passes(fuzz_headers: dict[str, str]) -> None:
    """Linked calls (create, then read, change, delete what was created), every check; the
    database keeps each scenario's changes, so hypothesis' replays may draw otherwise, which
    alone is not a failure (tests/support/stateful.py)."""
    reset_quotas(fuzz_headers)
    run = run_stateful(
        schema,
        scenarios=STATEFUL,
        settings=settings(HYPOTHESIS, stateful_step_count=6),
        checks=ALL_CHECKS,
        headers=lambda case: credential(case, fuzz_headers),
        seed=SEED,
        before_call=without_quotas,
    )
    CASES[PROXY.label] += run.calls
    STATEFUL_RUNS[PROXY.label] = f"{run.scenarios} scenarios in {run.runs} hypothesis runs"


QUOTAS = ("max_queued", "max_running")


def without_quotas(case: schemathesis.Case[Any]) -> None:
    """A user's quotas decide whether each later submit is stored (201) or refused (429
    `quota_exceeded`) by how many jobs earlier steps left waiting: a replay then meets another
    state and hypothesis gives up (FlakyStrategyDefinition). The stateful run leaves them out
    of an admin's user changes; tests/api/test_quotas.py holds their rules, and the
    stateless run still sends them."""
    if case.operation.label == "PATCH /api/v1/admin/users/{user_id}" and isinstance(
        case.body, dict
    ):
        for name in QUOTAS:
            case.body.pop(name, None)


def reset_quotas(headers: dict[str, str]) -> None:
    """Every user's quotas back to the defaults (the stateless run may have set some)."""
    with asgi.get_client(PROXY) as client:
        listed = client.get("http://testserver/api/v1/admin/users?limit=1000", headers=headers)
        if listed.status_code != 200:  # not an admin: nobody could have changed them
            return
        for user in listed.json():
            reset = dict.fromkeys(QUOTAS)
            r = client.patch(
                f"http://testserver/api/v1/admin/users/{user['id']}", json=reset, headers=headers
            )
            assert r.status_code == 200, r.text


async def test_the_address_pattern_bounds_the_local_part_as_the_service_does(api: Api) -> None:
    """The schema's pattern says what the service checks, the local part's 64 characters
    included, so an address valid by the schema is accepted and one it refuses is a 422."""
    pattern = re.compile(EMAIL_PATTERN)  # JSON Schema patterns are ECMA-262; this one reads alike
    register = _openapi["components"]["schemas"]["Register"]["properties"]["email"]
    assert register["pattern"] == EMAIL_PATTERN
    longest, too_long = f"{'a' * 64}@example.com", f"{'a' * 65}@example.com"
    assert pattern.fullmatch(longest) and not pattern.fullmatch(too_long)
    body = {"email": f" {longest.upper()} ", "password": PASSWORD}
    r = await api.client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 202, r.text
    r = await api.client.post("/api/v1/auth/register", json={**body, "email": too_long})
    assert r.status_code == 422, r.text
    assert "64 characters before the @" in r.text


async def test_a_body_that_is_not_json_gets_an_answer_its_operation_documents(api: Api) -> None:
    """Found by the unbounded run: reference 003's `POST /api/jobs/` documented its 400 as
    field errors only, and a body that is not JSON got the API's error shape under it."""
    admin = await api.admin()
    CONFORMS = [response_schema_conformance]  # noqa: N806
    for path, methods in _openapi["paths"].items():
        for method, operation in methods.items():
            if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                continue
            url = re.sub(r"\{[^}]+\}", "0", path)
            r = await api.client.request(
                method,
                url,
                content=b"X'\xff\x11",  # not UTF-8 either
                headers={**admin, "Content-Type": "application/json"},
            )
            assert r.status_code < 500, (method, path, r.text)
            case = schema[path][method.upper()].Case()
            case.validate_response(Response.from_httpx(r, verify=False), checks=CONFORMS)


async def test_the_rules_the_schema_states_are_the_ones_the_service_keeps(api: Api) -> None:
    """run_at or delay, a filter or ids, a zone of the list, a sort key: the schema says each
    (so schemathesis makes no case that breaks one as valid data), and the service refuses
    exactly that; null counts as absent on both sides."""
    schemas = _openapi["components"]["schemas"]
    assert schemas["JobCreate"]["not"]["required"] == ["run_at", "delay"]
    assert [s["required"] for s in schemas["BulkRequest"]["oneOf"]] == [["filter"], ["ids"]]
    zone = schemas["ScheduleCreate"]["properties"]["timezone"]
    assert zone["enum"] == sorted(zoneinfo.available_timezones()) and "posixrules" not in zone
    user = await api.user("rules@example.com")
    later = "2100-01-01T00:00:00Z"
    for body, expected in [
        ({"type": "sleep", "run_at": later, "delay": 1}, 422),
        ({"type": "sleep", "run_at": None, "delay": 1}, 201),
        ({"type": "sleep", "run_at": later, "delay": None}, 201),
    ]:
        r = await api.client.post("/api/v1/jobs", json=body, headers=user)
        assert r.status_code == expected, (body, r.text)
    for body, expected in [
        ({"action": "cancel", "filter": {}, "ids": ["x"]}, 422),
        ({"action": "cancel"}, 422),
        ({"action": "cancel", "filter": None, "ids": ["x"]}, 200),
        ({"action": "cancel", "filter": {}, "ids": None}, 200),
    ]:
        r = await api.client.post("/api/v1/jobs/bulk", json=body, headers=user)
        assert r.status_code == expected, (body, r.text)
    schedule = {"name": "n", "cron": "*/5 * * * *", "type": "sleep"}
    for zone_name, expected in [("posixrules", 422), ("utc", 422), ("Europe/Paris", 201)]:
        body = {**schedule, "timezone": zone_name}
        r = await api.client.post("/api/v1/schedules", json=body, headers=user)
        assert r.status_code == expected, (zone_name, r.text)
    parameters = _openapi["paths"]["/api/v1/jobs"]["get"]["parameters"]
    keys = next(p["schema"]["enum"] for p in parameters if p["name"] == "sort")
    for key in keys:
        r = await api.client.get("/api/v1/jobs", params={"sort": key}, headers=user)
        assert r.status_code == 200, (key, r.text)
    r = await api.client.get("/api/v1/jobs", params={"sort": "+priority"}, headers=user)
    assert r.status_code == 422, r.text
