"""The soak's load, all through the API: paced submits, batches, SSE clients, a trickle.

Two accounts: `main` carries the bulk (steady single submits at a rate, a batch now and
then), followed by one SSE stream of everything and by job followers (one job's stream at a
time, to its end: each opens and closes a subscription); `side` owns the cron schedules and a
trickle of submits, has a webhook subscription to a loopback receiver and an SSE stream of
its own. The main stream's `completed` events time each job end to end (submit to a client
seeing it done). Every request's failure is counted by kind; the sampler takes each window's
figures with `Load.take_window()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.client import Api

SSE_HEADERS = {"Accept": "text/event-stream"}
REQUEST_TIMEOUT_S = 30.0
TRIES = 6  # a submission answered 503 (or not at all) is sent again, as Conveyor's client does
RETRY_CAP_S = 2.0
OK = (200, 201)  # 200: an earlier try of the same submission was stored


@dataclass
class Window:
    """What happened since the last sample."""

    submit_s: list[float] = field(default_factory=list)  # single-submit latencies
    batch_s: list[float] = field(default_factory=list)  # batch request latencies
    e2e_s: list[float] = field(default_factory=list)  # submit -> completed seen on the stream
    submitted: int = 0
    completed: int = 0  # completed events of main's jobs seen on its stream
    events: int = 0  # SSE messages received on every stream
    followed: int = 0  # job streams followed to their end


def job_body(rng: random.Random, index: int, pool_share: float) -> dict[str, Any]:
    """Mostly a few milliseconds, a tail to one second; 5 % fail once, 1 % twice."""
    draw = rng.random()
    if draw < 0.6:
        seconds = rng.uniform(0.001, 0.01)
    elif draw < 0.9:
        seconds = rng.uniform(0.01, 0.1)
    elif draw < 0.99:
        seconds = rng.uniform(0.1, 0.5)
    else:
        seconds = rng.uniform(0.5, 1.0)
    fail = rng.random()
    fail_first = 1 if fail < 0.05 else 2 if fail < 0.06 else 0
    kind = "soak.pool" if rng.random() < pool_share else "soak.work"
    if kind == "soak.pool":
        seconds = min(seconds, 0.2)
    payload = {"index": index, "seconds": round(seconds, 4), "fail_first": fail_first}
    key = f"soak-{index}"  # a retried submission is stored once
    return {"type": kind, "payload": payload, "max_attempts": 5, "idempotency_key": key}


async def sse_messages(response: httpx.Response) -> AsyncIterator[tuple[str, str, str]]:
    """(id, event, data) of each message of an SSE response (comments skipped)."""
    ident, event, data = "", "", ""
    async for line in response.aiter_lines():
        if not line:
            if event or data:
                yield ident, event, data
            event, data = "", ""
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            ident = value
        elif name == "event":
            event = value
        elif name == "data":
            data = value


class Load:
    """Every load generator of one soak, on one API."""

    def __init__(
        self,
        main: Api,
        side: Api,
        *,
        rate: float,
        lanes: int = 0,
        batch_every: float = 15.0,
        batch_size: int = 200,
        side_rate: float = 2.0,
        followers: int = 2,
        pool_share: float = 0.02,
        seed: int = 13,
    ) -> None:
        self.main, self.side = main, side
        # a lane waits for each answer: at ~0.2 s each on a loaded machine, 5 jobs/s a lane
        self.rate, self.lanes = rate, lanes or max(4, math.ceil(rate / 5))
        self.batch_every, self.batch_size = batch_every, batch_size
        self.side_rate, self.followers, self.pool_share = side_rate, followers, pool_share
        self.rng = random.Random(seed)
        self.next_index = 0
        self.acked: set[int] = set()  # indexes the API acknowledged (201 with an id)
        self.unknown = 0  # submits that got no answer (may or may not have committed)
        self.pending: dict[str, float] = {}  # main job id -> submit time (until seen completed)
        # completed events that came before their submit's answer did (a job of 1 ms can
        # finish, and its event reach the stream, before the API's answer reaches the lane);
        # also every other account's jobs an admin's stream shows: kept a minute at most
        self.early: dict[str, float] = {}
        self.side_jobs: set[str] = set()  # side's submitted job ids (webhooks expected)
        self.last_id = ""  # the newest acknowledged main job (what followers follow)
        self.errors: Counter[str] = Counter()  # requests that failed for good
        self.retried: Counter[str] = Counter()  # answers retried: 503 (the contract under overload)
        self.window = Window()
        self.totals = Window()
        self._stop = asyncio.Event()
        self._streams: list[asyncio.Task[None]] = []  # run until `close`
        self._tasks: list[asyncio.Task[None]] = []  # run until `stop_submitting`

    # ---- control ---------------------------------------------------------------------------
    def start(self) -> None:
        streams = [self._stream(self.main, "main"), self._stream(self.side, "side")]
        self._streams = [asyncio.create_task(s) for s in streams]
        jobs = [self._lane(i) for i in range(self.lanes)]
        jobs += [self._batches(), self._side_trickle()]
        jobs += [self._follower() for _ in range(self.followers)]
        self._tasks = [asyncio.create_task(j) for j in jobs]

    async def stop_submitting(self) -> None:
        """Stop the submitters and followers; the SSE streams keep reading until `close`."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in [*self._tasks, *self._streams]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._streams, return_exceptions=True)

    def take_window(self) -> Window:
        window, self.window = self.window, Window()
        old = time.monotonic() - 60.0
        self.early = {k: t for k, t in self.early.items() if t > old}
        return window

    def _take_index(self) -> int:
        self.next_index += 1
        return self.next_index - 1

    # ---- submits ---------------------------------------------------------------------------
    async def _lane(self, lane: int) -> None:
        """One of `lanes` paced submitters: together `rate` jobs/s. A lane that falls more
        than a second behind starts pacing from now (the shortfall shows as a lower rate)."""
        interval = self.lanes / self.rate
        next_at = time.monotonic() + lane * interval / self.lanes
        async with self.main.client(REQUEST_TIMEOUT_S) as http:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1.0:
                    next_at = time.monotonic()
                next_at += interval
                await self._submit_one(http)

    async def _post(self, http: httpx.AsyncClient, what: str, url: str, body: object) -> Any:
        """POST with retries on 503 (after its Retry-After, capped) and on no answer; the
        answer's JSON, or None (counted as an error) when every try failed."""
        failure, pause = "", 0.0
        for attempt in range(TRIES):
            if attempt:
                await asyncio.sleep(pause)
            try:
                answer = await http.post(url, json=body)
            except httpx.HTTPError as exc:
                failure, pause = type(exc).__name__, 1.0
                self.retried[f"{what} {failure}"] += 1
                continue
            if answer.status_code in OK:
                return answer.json()
            failure = str(answer.status_code)
            if answer.status_code != 503:
                break
            self.retried[f"{what} 503"] += 1
            pause = min(RETRY_CAP_S, float(answer.headers.get("Retry-After", "1")))
        self.errors[f"{what} {failure}"] += 1
        return None

    async def _submit_one(self, http: httpx.AsyncClient) -> None:
        index = self._take_index()
        body = job_body(self.rng, index, self.pool_share)
        started = time.monotonic()
        out = await self._post(http, "submit", "/api/v1/jobs", body)
        if out is None:
            self.unknown += 1
            return
        elapsed = time.monotonic() - started
        job_id = str(out["id"])
        self.acked.add(index)
        self._submitted(job_id, started)
        self.last_id = job_id
        self.window.submit_s.append(elapsed)
        self.window.submitted += 1
        self.totals.submitted += 1

    def _submitted(self, job_id: str, started: float) -> None:
        seen = self.early.pop(job_id, None)
        if seen is None:
            self.pending[job_id] = started
        else:
            self._completed(seen - started)

    async def _batches(self) -> None:
        async with self.main.client(REQUEST_TIMEOUT_S) as http:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.batch_every)
                    return
                indexes = [self._take_index() for _ in range(self.batch_size)]
                jobs = [job_body(self.rng, i, self.pool_share) for i in indexes]
                started = time.monotonic()
                outs = await self._post(http, "batch", "/api/v1/jobs/batch", {"jobs": jobs})
                if outs is None:
                    self.unknown += len(jobs)
                    continue
                self.window.batch_s.append(time.monotonic() - started)
                for index, out in zip(indexes, outs, strict=True):
                    self.acked.add(index)
                    self._submitted(str(out["id"]), started)
                self.window.submitted += len(jobs)
                self.totals.submitted += len(jobs)

    async def _side_trickle(self) -> None:
        """The side account's own jobs: their `completed` webhooks are checked at the end."""
        async with self.side.client(REQUEST_TIMEOUT_S) as http:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0 / self.side_rate)
                    return
                index = self._take_index()
                payload = {"index": index, "seconds": 0.01}
                body = {"type": "soak.work", "payload": payload, "idempotency_key": f"soak-{index}"}
                out = await self._post(http, "side submit", "/api/v1/jobs", body)
                if out is None:
                    self.unknown += 1
                    continue
                self.acked.add(index)
                self.side_jobs.add(str(out["id"]))

    # ---- SSE -------------------------------------------------------------------------------
    async def _stream(self, api: Api, name: str) -> None:
        """Everything of one account, for the whole soak; a dropped stream resumes from its
        last id (counted as an error: nothing should drop it)."""
        last = ""
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=None)
        async with api.client() as http:
            while True:
                headers = dict(SSE_HEADERS)
                if last:
                    headers["Last-Event-ID"] = last
                try:
                    async with http.stream(
                        "GET", "/api/v1/events", headers=headers, timeout=timeout
                    ) as response:
                        if response.status_code != 200:
                            self.errors[f"sse {name} {response.status_code}"] += 1
                            await asyncio.sleep(1.0)
                            continue
                        async for ident, event, data in sse_messages(response):
                            last = ident or last
                            self._on_event(event, data)
                except httpx.HTTPError as exc:
                    self.errors[f"sse {name} {type(exc).__name__}"] += 1
                    await asyncio.sleep(1.0)
                    continue
                self.errors[f"sse {name} ended"] += 1

    def _on_event(self, event: str, data: str) -> None:
        self.window.events += 1
        if event != "completed":
            return
        job_id = str(json.loads(data)["job"]["id"])
        now = time.monotonic()
        started = self.pending.pop(job_id, None)
        if started is None:
            self.early[job_id] = now
        else:
            self._completed(now - started)

    def _completed(self, elapsed: float) -> None:
        self.window.e2e_s.append(elapsed)
        self.window.completed += 1
        self.totals.completed += 1

    async def _follower(self) -> None:
        """One job's stream after another, each to its terminal event."""
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=120.0)
        async with self.main.client() as http:
            while not self._stop.is_set():
                job_id = self.last_id
                if not job_id:
                    await asyncio.sleep(0.5)
                    continue
                ended = ""
                try:
                    async with http.stream(
                        "GET",
                        f"/api/v1/jobs/{job_id}/events",
                        headers=SSE_HEADERS,
                        timeout=timeout,
                    ) as response:
                        if response.status_code == 404:  # pruned already: a fast job
                            await asyncio.sleep(0.2)
                            continue
                        if response.status_code != 200:
                            self.errors[f"follow {response.status_code}"] += 1
                            await asyncio.sleep(1.0)
                            continue
                        async for _ident, event, _data in sse_messages(response):
                            self.window.events += 1
                            ended = event
                except httpx.HTTPError as exc:
                    self.errors[f"follow {type(exc).__name__}"] += 1
                    await asyncio.sleep(1.0)
                    continue
                if ended in ("completed", "failed", "cancelled"):
                    self.window.followed += 1
                    self.totals.followed += 1
                else:
                    self.errors["follow ended before the job did"] += 1
                await asyncio.sleep(0.2)
