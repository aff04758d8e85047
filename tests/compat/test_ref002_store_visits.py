"""Reference 002 replayed: its request bodies, its 400s and messages, the status flow, auth.

The reference documents ``POST /api/jobs`` (201 ``{"job_id"}``; 400 ``{"error": "The 'count'
field does not match the number of 'visits'."}``) and ``GET /api/status?jobid=`` (200
``{"job_id", "status"}``; 400 ``{"error": "Job not found"}``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.compat import store_visits
from conveyor.runtime import Engine
from conveyor.server import create_app
from tests.api.conftest import Api, api_settings
from tests.handlers.conftest import ImageSite, url
from tests.net.world import LoopbackServer

REFERENCE_BODY: dict[str, Any] = {
    "count": 2,
    "visits": [
        {
            "store_id": "RP00002",
            "image_url": ["https://www.gstatic.com/webp/gallery/2.jpg"],
            "visit_time": "2024-11-16T12:00:00Z",
        },
        {
            "store_id": "RP00002",
            "image_url": ["https://www.gstatic.com/webp/gallery/2.jpg"],
            "visit_time": "2024-11-16T12:00:00Z",
        },
    ],
}
GOOD_VISIT = {"store_id": "RP00001", "image_url": ["https://example.com/a.jpg"]}


@asynccontextmanager
async def reference_api(db_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    """The app on the test database, with this adapter mounted if the app does not yet."""
    settings = api_settings(db_url, tmp_path, store_visit_delay="0", **overrides)
    engine = await Engine.open(settings)
    app = create_app(settings, engine=engine)
    if "/api/status" not in {getattr(route, "path", None) for route in app.routes}:
        app.include_router(store_visits.router)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Api(client, engine, settings, tmp_path / "mail")
    finally:
        await engine.close()


@pytest.fixture
async def site() -> AsyncIterator[LoopbackServer]:
    server = await LoopbackServer(ImageSite()).start()
    yield server
    await server.stop()


async def submit(api: Api, body: Any, headers: dict[str, str]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await api.client.post(
        "/api/jobs", content=content, headers={**headers, "Content-Type": "application/json"}
    )


async def status_of(api: Api, job_id: str, headers: dict[str, str]) -> httpx.Response:
    return await api.client.get("/api/status", params={"jobid": job_id}, headers=headers)


async def wait_until_done(api: Api, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Run a worker until the reference status stops being "ongoing"."""
    worker = api.engine.worker("*", concurrency=4)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            answer: dict[str, Any] = (await status_of(api, job_id, headers)).json()
            if answer["status"] != "ongoing":
                return answer
            await asyncio.sleep(0.02)
        raise AssertionError(f"job {job_id} still ongoing")
    finally:
        worker.stop(force=True)
        await task


async def test_the_reference_request_is_accepted_and_ongoing(db_url: str, tmp_path: Path) -> None:
    async with reference_api(db_url, tmp_path) as api:
        headers = await api.user("ref@example.com")
        r = await submit(api, REFERENCE_BODY, headers)
        assert r.status_code == 201, r.text
        assert list(r.json()) == ["job_id"]
        job_id = r.json()["job_id"]
        r = await status_of(api, job_id, headers)
        assert r.status_code == 200
        assert r.json() == {"job_id": job_id, "status": "ongoing"}
        job = await api.engine.jobs.get(job_id)
        assert job.type == "store_visits"
        assert job.payload["visits"] == REFERENCE_BODY["visits"]


def one(visit: Any) -> dict[str, Any]:
    return {"count": 1, "visits": [visit]}


URL = "https://a.test/x.jpg"
BAD_REQUESTS: list[tuple[Any, str]] = [
    (b'{"count": 2, "visits": [', "The request body is not valid JSON."),
    (b"", "The request body is not valid JSON."),
    (
        {"count": 3, "visits": REFERENCE_BODY["visits"]},
        "The 'count' field does not match the number of 'visits'.",
    ),
    ({"visits": [GOOD_VISIT]}, "The 'count' field must be an integer."),
    ({"count": "1", "visits": [GOOD_VISIT]}, "The 'count' field must be an integer."),
    ({"count": 1}, "The 'visits' field must be a list."),
    ([GOOD_VISIT], "The request body must be a JSON object."),
    (one({"image_url": [URL]}), "Visit 1 is missing 'store_id'."),
    (one({"store_id": " ", "image_url": [URL]}), "Visit 1 is missing 'store_id'."),
    ({"count": 2, "visits": [GOOD_VISIT, {"store_id": "S"}]}, "Visit 2 has no 'image_url'."),
    (one({"store_id": "RP00001", "image_url": []}), "Visit 1 has no 'image_url'."),
    (one("RP00001"), "Visit 1 must be a JSON object."),
    (
        one({"store_id": "RP00001", "image_url": ["ftp://a.test/x.jpg"]}),
        "Invalid visits[1].image_url[1]: only http and https URLs are allowed, not 'ftp'.",
    ),
    (
        one({"store_id": "RP00001", "image_url": [7]}),
        "Invalid visits[1].image_url[1]: Input should be a valid string.",
    ),
    (
        one({**GOOD_VISIT, "visit_time": "yesterday"}),
        "Invalid visits[1].visit_time: Input should be a valid datetime or date, "
        "input is too short.",
    ),
    (
        {"count": 0, "visits": []},
        "Invalid visits: List should have at least 1 item after validation, not 0.",
    ),
]


async def test_bad_requests_answer_400_in_the_reference_shape_and_store_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with reference_api(db_url, tmp_path) as api:
        headers = await api.user("bad@example.com")
        for body, message in BAD_REQUESTS:
            r = await submit(api, body, headers)
            assert (r.status_code, r.json()) == (400, {"error": message}), body
        counts = await api.engine.backend.counts()
        assert [c for c in counts if c.queue != "mail"] == []  # account mail aside


async def test_unknown_fields_are_ignored_as_the_reference_does(
    db_url: str, tmp_path: Path
) -> None:
    async with reference_api(db_url, tmp_path) as api:
        headers = await api.user("extra@example.com")
        body = {"count": 1, "visits": [{**GOOD_VISIT, "note": "x"}], "source": "app"}
        r = await submit(api, body, headers)
        assert r.status_code == 201, r.text
        job = await api.engine.jobs.get(r.json()["job_id"])
        assert job.payload["visits"] == [{**GOOD_VISIT, "visit_time": None}]


async def test_unknown_other_owners_and_other_types_of_jobs_are_not_found(
    db_url: str, tmp_path: Path
) -> None:
    async with reference_api(db_url, tmp_path) as api:
        ada, bob = await api.user("ada@example.com"), await api.user("bob@example.com")
        job_id = (await submit(api, REFERENCE_BODY, ada)).json()["job_id"]
        sleep = await api.client.post(
            "/api/v1/jobs", json={"type": "sleep", "payload": {"seconds": 0}}, headers=ada
        )
        not_found = (400, {"error": "Job not found"})
        for who, jid in [(ada, "job_20241116100000"), (bob, job_id), (ada, sleep.json()["id"])]:
            r = await status_of(api, jid, who)
            assert (r.status_code, r.json()) == not_found
        r = await status_of(api, "x" * 5000, ada)
        assert (r.status_code, r.json()) == not_found
        r = await api.client.get("/api/status", headers=ada)
        assert r.status_code == 400
        assert r.json() == {"error": "The 'jobid' query parameter is required."}


async def test_a_job_goes_from_ongoing_to_completed(
    db_url: str, tmp_path: Path, site: LoopbackServer
) -> None:
    body = {
        "count": 2,
        "visits": [
            {"store_id": "RP00002", "image_url": [url(site, "/jpeg/300x200")]},
            {"store_id": "RP00003", "image_url": [url(site, "/png/5x5"), url(site, "/gif/2x1")]},
        ],
    }
    async with reference_api(db_url, tmp_path, allow_private_urls=True) as api:
        headers = await api.user("flow@example.com")
        job_id = (await submit(api, body, headers)).json()["job_id"]
        assert (await status_of(api, job_id, headers)).json()["status"] == "ongoing"
        assert await wait_until_done(api, job_id, headers) == {
            "job_id": job_id,
            "status": "completed",
        }
        result = await api.client.get(f"/api/v1/jobs/{job_id}/result", headers=headers)
        images = result.json()["result"]["images"]
        assert [(i["store_id"], i["perimeter"]) for i in images] == [
            ("RP00002", 1000),
            ("RP00003", 20),
            ("RP00003", 6),
        ]


async def test_a_job_fails_with_one_error_per_failing_store(
    db_url: str, tmp_path: Path, site: LoopbackServer
) -> None:
    missing = url(site, "/missing")
    body = {
        "count": 4,
        "visits": [
            {"store_id": "RP00001", "image_url": [url(site, "/png/2x2")]},
            {"store_id": "RP99999", "image_url": [url(site, "/png/2x2")]},
            {"store_id": "RP00003", "image_url": [missing, url(site, "/png/1x1")]},
            {"store_id": "RP99999", "image_url": [url(site, "/png/3x3")]},
        ],
    }
    async with reference_api(db_url, tmp_path, allow_private_urls=True) as api:
        headers = await api.user("fail@example.com")
        job_id = (await submit(api, body, headers)).json()["job_id"]
        assert await wait_until_done(api, job_id, headers) == {
            "job_id": job_id,
            "status": "failed",
            "error": [
                {"store_id": "RP99999", "error": "unknown store_id 'RP99999'"},
                {
                    "store_id": "RP00003",
                    "error": f"image {missing}: the download failed (HTTP 404)",
                },
            ],
        }


async def test_a_cancelled_job_is_failed_for_every_store(db_url: str, tmp_path: Path) -> None:
    async with reference_api(db_url, tmp_path) as api:
        headers = await api.user("cancel@example.com")
        job_id = (await submit(api, REFERENCE_BODY, headers)).json()["job_id"]
        await api.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)
        r = await status_of(api, job_id, headers)
        assert r.json() == {
            "job_id": job_id,
            "status": "failed",
            "error": [{"store_id": "RP00002", "error": "the job was cancelled"}],
        }


async def test_a_token_is_required_by_default(db_url: str, tmp_path: Path) -> None:
    async with reference_api(db_url, tmp_path) as api:
        for r in (
            await submit(api, REFERENCE_BODY, {}),
            await status_of(api, "anything", {}),
            await submit(api, REFERENCE_BODY, {"Authorization": "Bearer not-a-token"}),
        ):
            assert r.status_code == 401
            assert isinstance(r.json()["error"], str)
            assert r.headers["www-authenticate"] == "Bearer"
        assert await api.engine.backend.counts() == []


async def test_anonymous_use_is_allowed_with_the_setting(db_url: str, tmp_path: Path) -> None:
    async with reference_api(db_url, tmp_path, anonymous_store_visits=True) as api:
        r = await submit(api, REFERENCE_BODY, {})
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        assert (await status_of(api, job_id, {})).json() == {"job_id": job_id, "status": "ongoing"}
        assert (await api.engine.jobs.get(job_id)).owner_id == store_visits.ANONYMOUS_OWNER
        user = await api.user("named@example.com")
        own = (await submit(api, REFERENCE_BODY, user)).json()["job_id"]
        assert (await api.engine.jobs.get(own)).owner_id != store_visits.ANONYMOUS_OWNER
        r = await status_of(api, own, {})
        assert (r.status_code, r.json()) == (400, {"error": "Job not found"})
        bad = await submit(api, REFERENCE_BODY, {"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401  # a bad token is refused, not taken as anonymous
