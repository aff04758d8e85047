"""The suite's side of the API: an account, the submitter's ledger, and a timed prober.

The submitter records what went in before any fault is judged: each job's index, and
whether the API acknowledged it (201 with an id), refused it (a definite error answer) or
gave no answer in time (unknown: it may have committed). The prober keeps requests in flight
against one or more APIs during an outage and keeps the slowest answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.verdict import Submission

EMAIL, PASSWORD = "chaos@example.com", "chaos-suite-password-123"
ANSWER_TIMEOUT_S = 30.0  # long enough to measure a hang, short enough to end the scenario


class Api:
    """One API base URL and the suite's bearer token for it."""

    def __init__(self, url: str, token: str = "") -> None:
        self.url = url
        self.token = token

    def client(self, timeout: float = ANSWER_TIMEOUT_S) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers)

    async def wait_healthy(self, timeout: float, alive: Any = None) -> None:
        """`/health` answers 200; fails early if `alive()` says the process died."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health")).status_code == 200:
                        return
                if alive is not None and not alive():
                    raise RuntimeError(f"the API at {self.url} exited while starting")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API at {self.url} was not healthy in {timeout:.0f} s")
                await asyncio.sleep(0.2)

    async def sign_in(self) -> None:
        """Register the suite's account (verification is off) and take a token."""
        body = {"email": EMAIL, "password": PASSWORD}
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            created = await http.post("/api/v1/auth/register", json=body)
            if created.status_code not in (200, 201, 202, 409):
                created.raise_for_status()
            login = await http.post("/api/v1/auth/login", json=body)
            login.raise_for_status()
            self.token = str(login.json()["access_token"])

    async def subscribe(self, url: str) -> None:
        """A webhook subscription for this account's `completed` events."""
        async with self.client(60) as http:
            answer = await http.post("/api/v1/webhooks", json={"url": url, "events": ["completed"]})
            answer.raise_for_status()


@dataclass
class Ledger:
    """Everything submitted in one scenario, numbered by the suite."""

    submissions: list[Submission] = field(default_factory=list)
    next_index: int = 0

    def take(self, n: int) -> range:
        start, self.next_index = self.next_index, self.next_index + n
        return range(start, start + n)

    def acked(self) -> int:
        return sum(1 for s in self.submissions if s.outcome == "acked")


def job_body(job_type: str, index: int, seconds: float, max_attempts: int) -> dict[str, Any]:
    payload: dict[str, Any] = {"index": index}
    if job_type != "chaos.crash":
        payload["seconds"] = seconds
    return {"type": job_type, "payload": payload, "max_attempts": max_attempts}


class Submitter:
    """Submits jobs through an API and writes each into the ledger."""

    def __init__(self, api: Api, ledger: Ledger) -> None:
        self.api = api
        self.ledger = ledger

    async def batch(
        self,
        n: int,
        seconds: float,
        *,
        job_type: str = "chaos.work",
        max_attempts: int = 20,
        fault_job: bool = False,
        limits: Callable[[int], dict[str, str]] | None = None,
    ) -> list[str]:
        """`n` jobs in one request; their ids (an error answer: none, all refused).
        `limits`: each job's submit limits ({name: key}), from its index."""
        indexes = self.ledger.take(n)
        jobs = [job_body(job_type, i, seconds, max_attempts) for i in indexes]
        if limits is not None:
            for body, index in zip(jobs, indexes, strict=True):
                body["limits"] = limits(index)
        started = time.monotonic()
        outcome, ids = "unknown", list[str | None]([None] * n)
        async with self.api.client() as http:
            try:
                answer = await http.post("/api/v1/jobs/batch", json={"jobs": jobs})
                if answer.status_code == 201:
                    outcome, ids = "acked", [str(j["id"]) for j in answer.json()]
                else:
                    outcome = "refused"
            except httpx.HTTPError:
                pass
        latency = time.monotonic() - started
        for index, job_id in zip(indexes, ids, strict=True):
            self.ledger.submissions.append(
                Submission(index, outcome, job_id, time.time(), latency, fault_job)
            )
        return [i for i in ids if i is not None]

    async def workflow(self, http: httpx.AsyncClient, steps: int) -> tuple[str | None, range]:
        """One `POST /api/v1/workflows` on `http`: `steps` `chaos.work` steps (named
        `s<index>`) and a join (`j<index>`, the last index) depending on them all, each a
        ledger job. The workflow's id when it was answered 201, and the indexes it took."""
        indexes = self.ledger.take(steps + 1)
        fan = [{"name": f"s{i}", "type": "chaos.work", "payload": {"index": i}} for i in indexes]
        join = {**fan.pop(), "name": f"j{indexes[-1]}", "depends_on": [f["name"] for f in fan]}
        started = time.monotonic()
        outcome, workflow_id, ids = "unknown", None, dict[int, str]()
        try:
            body = {"name": "chaos", "steps": [*fan, join]}
            answer = await http.post("/api/v1/workflows", json=body)
            if answer.status_code == 201:
                stored = answer.json()
                outcome, workflow_id = "acked", str(stored["id"])
                ids = {int(step["name"][1:]): str(step["job_id"]) for step in stored["steps"]}
            else:
                outcome = "refused"
        except httpx.HTTPError:
            pass
        latency = time.monotonic() - started
        for index in indexes:
            self.ledger.submissions.append(
                Submission(index, outcome, ids.get(index), time.time(), latency)
            )
        return workflow_id, indexes

    async def one(self, http: httpx.AsyncClient, seconds: float) -> Submission:
        """One `POST /api/v1/jobs` on `http` (whose base URL may be another API)."""
        (index,) = self.ledger.take(1)
        started = time.monotonic()
        outcome, job_id = "unknown", None
        try:
            answer = await http.post(
                "/api/v1/jobs", json=job_body("chaos.work", index, seconds, 20)
            )
            if answer.status_code == 201:
                outcome, job_id = "acked", str(answer.json()["id"])
            else:
                outcome = "refused"
        except httpx.HTTPError:
            pass
        latency = time.monotonic() - started
        submission = Submission(index, outcome, job_id, time.time(), latency)
        self.ledger.submissions.append(submission)
        return submission


@dataclass
class Answer:
    what: str  # "submit http://..." or "ready http://..."
    started: float  # unix time
    latency: float
    status: str  # an HTTP status, or the error's name


class Prober:
    """Keeps `lanes` submissions and one `/ready` in flight per API until stopped."""

    def __init__(self, submitter: Submitter, apis: Sequence[Api], lanes: int = 3) -> None:
        self.submitter = submitter
        self.apis = list(apis)
        self.lanes = lanes
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for api in self.apis:
            for _ in range(self.lanes):
                self._tasks.append(asyncio.create_task(self._submits(api)))
            self._tasks.append(asyncio.create_task(self._ready(api)))

    async def stop(self) -> None:
        """Stop starting requests; wait for those in flight (each ends by its timeout)."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def slowest(self, since: float, until: float) -> float | None:
        """The slowest answer to a request in flight at some time in [since, until]
        (unix times): one sent before the outage and hanging through it counts."""
        during = [
            a.latency for a in self.answers if a.started <= until and a.started + a.latency >= since
        ]
        return max(during) if during else None

    async def _submits(self, api: Api) -> None:
        async with api.client() as http:
            while not self._stop.is_set():
                started = time.time()
                done = await self.submitter.one(http, 0.05)
                self.answers.append(
                    Answer(f"submit {api.url}", started, done.latency, done.outcome)
                )
                await asyncio.sleep(0.1)

    async def _ready(self, api: Api) -> None:
        async with httpx.AsyncClient(base_url=api.url, timeout=ANSWER_TIMEOUT_S) as http:
            while not self._stop.is_set():
                started, clock = time.time(), time.monotonic()
                try:
                    status = str((await http.get("/ready")).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latency = time.monotonic() - clock
                self.answers.append(Answer(f"ready {api.url}", started, latency, status))
                await asyncio.sleep(0.1)
