"""The webhooks sink: events fanned out into delivery rows, sent by a bounded dispatcher.

`WebhookSink.deliver` only writes: one delivery row per (event, matching subscription or job
callback) in one transaction, unique on that pair, so the relay's cursor moves on at database
speed and a redelivered batch adds nothing. `Dispatcher` (run by the relay in every relay
process, `serve`) claims due rows and POSTs them concurrently: at most `concurrency` at once,
at most `per_endpoint` of them to one host, so a slow or dead receiver holds only its share.

Each attempt goes through the SSRF-safe fetcher (addresses checked at every attempt, since
DNS may change), signed with HMAC-SHA256 over `f"{timestamp}.{body}"`. 2xx is delivered;
5xx, 408, 425, 429, a network error or a timeout is retried with exponential backoff and
jitter (a longer Retry-After is honoured) up to `max_attempts`; anything else fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from conveyor.domain.events import Event
from conveyor.domain.webhooks import DueDelivery, Settled
from conveyor.events import schema
from conveyor.events.config import WEEK
from conveyor.metrics import count_webhook_attempt
from conveyor.net import (
    BlockedUrl,
    FetchFailed,
    FetchPolicy,
    FetchResult,
    Resolver,
    TooLarge,
    fetch,
)
from conveyor.net.signing import sign
from conveyor.store.webhook_deliveries import WebhookDeliveryStore

log = logging.getLogger("conveyor.events.webhooks")

RETRYABLE_STATUSES = frozenset({408, 425, 429})
RETRY_AFTER_CAP = 24 * 3600.0  # a Retry-After beyond a day is read as a day
LEASE_MARGIN = 10.0  # a claim outlives the attempt's timeout by this much
GATHER_WINDOW = 0.01  # after one attempt ends, others that end within this join its settle
HEADERS = {
    "event_id": "X-Conveyor-Event-Id",
    "event_type": "X-Conveyor-Event-Type",
    "job": "X-Conveyor-Job",
    "delivery": "X-Conveyor-Delivery",
    "attempt": "X-Conveyor-Attempt",
    "timestamp": "X-Conveyor-Timestamp",
    "signature": "X-Conveyor-Signature",
}


@dataclass(frozen=True)
class DispatchConfig:
    concurrency: int = 16  # attempts in flight per process
    per_endpoint: int = 4  # of which at most this many to one host:port
    max_attempts: int = 10
    timeout: float = 10.0  # one attempt, connection to last byte
    backoff_initial: float = 5.0  # about this before the first retry, doubled each time
    backoff_max: float = 3600.0
    poll_interval: float = 1.0  # looks for due retries this often when nothing wakes it
    retention: float = WEEK  # finished deliveries are deleted after this
    prune_every: float = 300.0
    prune_batch: int = 10_000
    grace: float = 3.0  # on stop, attempts under way may finish within this
    max_response_bytes: int = 64 * 1024


def delivery_policy(base: FetchPolicy, config: DispatchConfig) -> FetchPolicy:
    """The service's SSRF policy with the attempt's limits; redirects are not followed (the
    signature is for the URL the owner gave)."""
    return replace(
        base, max_bytes=config.max_response_bytes, connect_timeout=min(5.0, config.timeout),
        read_timeout=config.timeout, total_timeout=config.timeout, max_redirects=0,
    )  # fmt: skip


def backoff(attempt: int, config: DispatchConfig, retry_after: float | None = None) -> float:
    """Seconds before the next attempt: the doubling base with "equal jitter" (half fixed,
    half random, so receivers that failed together do not all come back together), or the
    receiver's Retry-After when that is longer."""
    base = min(config.backoff_max, config.backoff_initial * 2 ** (attempt - 1))
    delay: float = base / 2 + random.uniform(0, base / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def headers_for(delivery: DueDelivery, timestamp: int) -> dict[str, str]:
    headers = {
        "Content-Type": schema.CONTENT_TYPE,
        HEADERS["event_id"]: str(delivery.event_id),
        HEADERS["event_type"]: delivery.event_type,
        HEADERS["job"]: delivery.job_id,
        HEADERS["delivery"]: str(delivery.id),
        HEADERS["attempt"]: str(delivery.attempt),
        HEADERS["timestamp"]: str(timestamp),
    }
    if delivery.secret is not None:
        headers[HEADERS["signature"]] = sign(delivery.secret, delivery.body, timestamp)
    return headers


class Dispatcher:
    """Sends due deliveries until stopped; any number may run, on any hosts."""

    def __init__(
        self,
        store: WebhookDeliveryStore,
        policy: FetchPolicy,
        config: DispatchConfig | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.store = store
        self.config = config or DispatchConfig()
        self.policy = delivery_policy(policy, self.config)
        self.resolver = resolver  # None: the OS resolver; tests give their own
        self._wake = asyncio.Event()
        self._inflight: dict[asyncio.Task[Settled], DueDelivery] = {}
        self._endpoints: Counter[str] = Counter()
        self._settled: list[Settled] = []
        self._next_prune = 0.0
        self.attempts = 0  # attempts made by this dispatcher (a figure for tests and logs)

    def wake(self) -> None:
        """New deliveries may be due (the sink just fanned some out)."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        failing = 0  # turns failed in a row: said once, not once per poll of an outage
        while not stopping.is_set():
            try:
                await self._turn()
            except Exception as exc:  # the database may be away: try again after a pause
                failing += 1
                level = logging.WARNING if failing == 1 else logging.DEBUG
                log.log(level, "webhook dispatch failed: %s: %s", type(exc).__name__, exc)
                await _sleep_unless(stopping, self.config.poll_interval)
            else:
                if failing:
                    log.info("webhook dispatch works again after %d failed turns", failing)
                failing = 0
            await self._idle(stopping)
        await self._drain()

    async def _turn(self) -> None:
        self._collect()
        if self._settled:
            batch, self._settled = self._settled, []
            try:
                await self.store.settle(batch)
            except BaseException:
                self._settled[:0] = batch  # kept to record later, never lost
                raise
        await self._fill()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + self.config.prune_every
            await self.prune()

    async def _fill(self) -> None:
        free = self.config.concurrency - len(self._inflight)
        if free <= 0:
            return
        cap = self.config.per_endpoint
        busy = sorted(e for e, n in self._endpoints.items() if n >= cap)
        lease = _utcnow() + timedelta(seconds=self.config.timeout + LEASE_MARGIN)
        claimed = await self.store.claim(free, lease, busy, cap)
        for delivery in claimed:
            task = asyncio.create_task(self._attempt(delivery), name=f"webhook:{delivery.id}")
            self._inflight[task] = delivery
            self._endpoints[delivery.endpoint] += 1
        if len(claimed) == free:
            self._wake.set()  # more may be due: look again once a slot frees

    def _collect(self) -> None:
        """Move finished attempts' outcomes to the batch that `settle` records."""
        for task in [t for t in self._inflight if t.done()]:
            delivery = self._inflight.pop(task)
            self._endpoints[delivery.endpoint] -= 1
            if self._endpoints[delivery.endpoint] <= 0:
                del self._endpoints[delivery.endpoint]
            if not task.cancelled():
                outcome = task.result()
                count_webhook_attempt(outcome.state)
                self._settled.append(outcome)

    async def _idle(self, stopping: asyncio.Event) -> None:
        """Until woken, an attempt ends, the poll interval passes, or a stop."""
        if any(task.done() for task in self._inflight):
            return
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(stopping.wait()),
        ]
        waits.extend(self._inflight)
        try:
            await asyncio.wait(
                waits, timeout=self.config.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waits[:2]:
                waiter.cancel()
            self._wake.clear()
        await self._gather()

    async def _gather(self) -> None:
        """A moment for attempts ending together to end together: one settle and one claim
        then serve them all (on SQLite each is a commit through the one writer)."""
        running = [task for task in self._inflight if not task.done()]
        if running:
            await asyncio.wait(running, timeout=GATHER_WINDOW)

    async def _drain(self) -> None:
        """On stop: let attempts under way end (grace), hand back the rest, record all."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=self.config.grace)
        unfinished = [d for t, d in self._inflight.items() if not t.done()]
        for task in self._inflight:
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        self._collect()
        with contextlib.suppress(Exception):
            await self.store.settle(self._settled)
            self._settled = []
            await self.store.release(unfinished)

    async def prune(self) -> int:
        before = _utcnow() - timedelta(seconds=self.config.retention)
        pruned = await self.store.prune(before, self.config.prune_batch)
        if pruned:
            log.info("pruned %d finished webhook deliveries", pruned)
        return pruned

    # ---- one attempt -----------------------------------------------------------------------
    async def _attempt(self, delivery: DueDelivery) -> Settled:
        self.attempts += 1
        if delivery.secret is None:
            return _failed(delivery, error="no signing secret for this delivery")
        timestamp = int(time.time())
        try:
            result = await fetch(
                delivery.url,
                policy=self.policy,
                method="POST",
                headers=headers_for(delivery, timestamp),
                content=delivery.body,
                resolver=self.resolver,
            )
        except BlockedUrl as exc:  # the host resolves somewhere it may not go (now)
            log.warning("webhook delivery %d refused: %s", delivery.id, exc.message)
            return _failed(delivery, error=exc.message)
        except TooLarge:
            return _failed(delivery, error="the receiver's answer was too large")
        except FetchFailed as exc:
            if exc.details.get("reason") == "redirects":
                return _failed(delivery, error="the receiver answered a redirect (not followed)")
            return self._retry(delivery, None, exc.message, None)
        except Exception as exc:  # a bug here must not end the dispatcher: log, retry later
            log.exception("webhook delivery %d: unexpected failure", delivery.id)
            return self._retry(delivery, None, f"{type(exc).__name__}: {exc}", None)
        return self._judge(delivery, result)

    def _judge(self, delivery: DueDelivery, result: FetchResult) -> Settled:
        status = result.status
        if 200 <= status < 300:
            return Settled(delivery.id, delivery.attempt, "delivered", status=status)
        error = f"the receiver answered {status}"
        if status >= 500 or status in RETRYABLE_STATUSES:
            wait = retry_after(result.headers.get("retry-after"))
            return self._retry(delivery, status, error, wait)
        return _failed(delivery, status=status, error=error)

    def _retry(
        self, delivery: DueDelivery, status: int | None, error: str, wait: float | None
    ) -> Settled:
        if delivery.attempt >= self.config.max_attempts:
            error = f"{error}; gave up after {delivery.attempt} attempts"
            return _failed(delivery, status=status, error=error)
        delay = backoff(delivery.attempt, self.config, wait)
        at = _utcnow() + timedelta(seconds=delay)
        return Settled(delivery.id, delivery.attempt, "pending", status, error, at)


class WebhookSink:
    """The relay's side: fan out, wake the dispatcher, return. `serve` runs the dispatcher."""

    name = "webhooks"

    def __init__(self, store: WebhookDeliveryStore, dispatcher: Dispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher

    async def deliver(self, events: Sequence[Event]) -> None:
        if await self.store.fan_out(events, schema.encode):
            self.dispatcher.wake()

    async def serve(self, stopping: asyncio.Event) -> None:
        await self.dispatcher.run(stopping)

    async def close(self) -> None:
        """Nothing to release: each attempt opens and closes its own connection."""


def _failed(delivery: DueDelivery, *, status: int | None = None, error: str) -> Settled:
    return Settled(delivery.id, delivery.attempt, "failed", status=status, error=error)


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
