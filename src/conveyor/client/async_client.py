"""`AsyncClient`: `Client`'s calls with `await` (httpx.AsyncClient), for asyncio programs."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from conveyor import __version__
from conveyor.client import calls
from conveyor.client.calls import JobSpec
from conveyor.client.errors import ConnectionFailed, ServiceUnavailable, error_from, retry_after
from conveyor.client.models import (
    Job,
    JobEvent,
    JobResult,
    JobType,
    Limits,
    Progress,
    Schedule,
    Tokens,
    User,
)
from conveyor.client.stream import EventCallback, Follow, ProgressCallback
from conveyor.client.transport import (
    Call,
    Core,
    Credentials,
    RetryPolicy,
    TokensCallback,
)
from conveyor.client.workflows import AsyncWorkflows, WorkflowSpec

T = TypeVar("T")
USER_AGENT = f"conveyor-client/{__version__}"


class AsyncClient:
    """`Client` for asyncio: the same arguments and calls, awaited. Use it as an async
    context manager, or `await aclose()` it."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        refresh_token: str | None = None,
        on_tokens: TokensCallback | None = None,
        timeout: float | httpx.Timeout = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._core = Core(Credentials(api_key or token, refresh_token, on_tokens), retry)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )
        self._refreshing = asyncio.Lock()
        self.workflows = AsyncWorkflows(self)  # submit, get, list, cancel, retry, watch ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- accounts ---------------------------------------------------------------------------
    async def login(self, email: str, password: str) -> Tokens:
        """Sign in; the tokens are kept and renewed with the refresh token when they expire."""
        tokens = await self._call(calls.login(email, password))
        self._core.credentials.update(tokens)
        return tokens

    async def logout(self) -> None:
        """End the login on the server (its refresh token stops working) and forget it."""
        refresh = self._core.credentials.refresh_token
        if refresh is not None:
            await self._call(calls.logout(refresh))
        self._core.credentials.clear()

    # ---- jobs -------------------------------------------------------------------------------
    async def submit(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        """Submit a job. Options: queue, priority, delay (s) or run_at, max_attempts,
        timeout (s per attempt), tags, idempotency_key (a repeat returns the first job),
        limits ({name: key} among the type's submit_limits)."""
        spec = JobSpec(type=type, payload=dict(payload or {}), **options)
        return await self._call(calls.submit(spec))

    async def submit_many(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> builtins.list[Job]:
        """Submit many jobs in one request and one transaction: all or none."""
        return await self._call(calls.submit_many(jobs))

    async def get(self, job_id: str) -> Job:
        return await self._call(calls.get(job_id))

    def list(
        self,
        *,
        state: str | Sequence[str] | None = None,
        type: str | None = None,
        queue: str | None = None,
        tag: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        owner_id: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[Job]:
        """Every matching job, newest first, fetching pages as the iteration goes (at most
        `limit` jobs if given)."""
        extra = {"type": type, "queue": queue, "tag": tag, "owner_id": owner_id}
        pages = calls.listing(state, created_after, created_before, page_size, limit, **extra)
        return self._pages(pages)

    async def _pages(self, pages: calls.Pages) -> AsyncIterator[Job]:
        while (call := pages.next_call()) is not None:
            for job in pages.take(await self._call(call)):
                yield job

    async def cancel(self, job_id: str) -> Job:
        return await self._call(calls.cancel(job_id))

    async def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again, with fresh attempts."""
        return await self._call(calls.retry(job_id))

    async def delete(self, job_id: str) -> None:
        """Delete a finished job."""
        await self._call(calls.delete(job_id))

    async def result(self, job_id: str) -> JobResult:
        """A completed job's result (Conflict while it is not completed)."""
        return await self._call(calls.result(job_id))

    async def progress(self, job_id: str) -> Progress:
        return await self._call(calls.progress(job_id))

    async def job_types(self) -> builtins.list[JobType]:
        return await self._call(calls.job_types())

    async def stats(self) -> dict[str, Any]:
        return await self._call(calls.stats())

    # ---- flow control ---------------------------------------------------------------------------
    async def limits(self, *, cursor: str | None = None, limit: int = 100) -> Limits:
        """One page of limits and keys (running, ready, rate tokens); follow `next_cursor`."""
        return await self._call(calls.limits(cursor, limit))

    async def set_user_flow(self, user_id: str, **changes: Any) -> User:
        """Admin only: a user's `fair_weight`, `max_queued`, `max_running` (None: back to the
        default; a quota of 0: no cap); settings left out are kept."""
        return await self._call(calls.set_user_flow(user_id, changes))

    async def list_users(
        self, *, after: str | None = None, limit: int = 200
    ) -> builtins.list[User]:
        """Admin only: accounts oldest first, `limit` after the id `after`."""
        return await self._call(calls.list_users(after, limit))

    # ---- following a job ----------------------------------------------------------------------
    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> Job:
        """The job once it has completed, failed or been cancelled, following its event
        stream (reconnecting and resuming after the last event if the connection drops).
        `WaitTimeout` after `timeout` seconds."""
        follow = Follow(job_id, timeout)
        while not (job := await self.get(job_id)).finished:
            async for event in self._follow(follow):
                if on_event is not None:
                    on_event(event)
                if on_progress is not None and (progress := event.progress) is not None:
                    on_progress(progress)
            follow.ended = False  # a terminal event of an earlier run (the job was retried)
        return job

    def watch(
        self, job_id: str, timeout: float | None = None, *, after: str | None = None
    ) -> AsyncIterator[JobEvent]:
        """The job's events from its first (or after the event `after`), live, ending after
        a terminal event."""
        return self._follow(Follow(job_id, timeout, last_event_id=after))

    async def _follow(self, follow: Follow) -> AsyncIterator[JobEvent]:
        while not follow.ended:
            try:
                async with self._stream(follow) as response:
                    if response.status_code == 204:  # the server says the story is told
                        return
                    async for line in response.aiter_lines():
                        if (event := follow.feed(line)) is not None:
                            yield event
                            if follow.ended:
                                return
            except (httpx.TransportError, ServiceUnavailable) as exc:
                follow.broke(exc, self.base_url)
            await asyncio.sleep(follow.dropped())

    @asynccontextmanager
    async def _stream(self, follow: Follow) -> AsyncIterator[httpx.Response]:
        call, timeout = follow.request(self._http.timeout.connect)
        response = await self._transmit(call, stream=True, timeout=timeout)
        try:
            if response.is_error:
                await response.aread()
                raise error_from(response)
            yield response
        finally:
            await response.aclose()

    # ---- schedules ----------------------------------------------------------------------------
    async def create_schedule(
        self,
        name: str,
        cron: str,
        type: str,
        payload: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Schedule:
        """A cron schedule firing `type` jobs. Options: timezone, queue, priority,
        max_attempts, timeout, tags, paused, misfire_policy, limits (name -> key, among the
        type's submit limits: each fire's job is under them)."""
        body = {"name": name, "cron": cron, "type": type, "payload": dict(payload or {}), **options}
        return await self._call(calls.create_schedule(body))

    async def create_workflow_schedule(
        self, name: str, cron: str, template: WorkflowSpec | Mapping[str, Any], **options: Any
    ) -> Schedule:
        """A cron schedule whose every fire submits one workflow of `template` (built with
        `workflow()`, `chain()`, ...; docs/workflows.md, "Cron"). Options: timezone, tags,
        paused, misfire_policy."""
        spec = template.body() if isinstance(template, WorkflowSpec) else dict(template)
        body = {"name": name, "cron": cron, "workflow": spec, **options}
        return await self._call(calls.create_schedule(body))

    async def list_schedules(self) -> builtins.list[Schedule]:
        return await self._call(calls.list_schedules())

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return await self._call(calls.get_schedule(schedule_id))

    async def update_schedule(self, schedule_id: str, **changes: Any) -> Schedule:
        """Change what is given (as `Client.update_schedule`; `workflow`: a new template)."""
        return await self._call(calls.update_schedule(schedule_id, changes))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self._call(calls.pause_schedule(schedule_id))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self._call(calls.resume_schedule(schedule_id))

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._call(calls.delete_schedule(schedule_id))

    # ---- sending --------------------------------------------------------------------------------
    async def _call(self, call: Call[T]) -> T:
        response = await self._retrying(call)
        if response.is_error:
            raise error_from(response)
        return call.parse(response)

    async def _retrying(self, call: Call[Any]) -> httpx.Response:
        """Send, and send again after a 503 or a lost connection if the call allows it."""
        attempt = 1
        while True:
            try:
                response = await self._transmit(call)
            except httpx.TransportError as exc:
                if not self._core.retries(call, attempt):
                    raise ConnectionFailed(self.base_url, exc) from exc
                pause = self._core.retry.pause(attempt)
            else:
                if response.status_code != 503 or not self._core.retries(call, attempt):
                    return response
                pause = self._core.retry.pause(attempt, retry_after(response))
            await asyncio.sleep(pause)
            attempt += 1

    async def _transmit(
        self, call: Call[Any], *, stream: bool = False, **extra: Any
    ) -> httpx.Response:
        """One send; on a 401 with a refresh token, renew the access token and send once more."""
        response = await self._http.send(
            self._core.request(self._http, call, **extra), stream=stream
        )
        stale = self._core.stale_token(call, response)
        if stale is None:
            return response
        await response.aclose()
        await self._refresh(stale)
        return await self._http.send(self._core.request(self._http, call, **extra), stream=stream)

    async def _refresh(self, stale: str) -> None:
        async with self._refreshing:
            if self._core.needs_refresh(stale):
                self._core.credentials.update(await self._call(self._core.refresh_call()))
