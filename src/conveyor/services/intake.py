"""Submissions over HTTP, many at once: checked and stored together, one commit for all.

A submission used to cost a transaction to check its caller, one to insert, and two reads
to answer. Here every request that arrives while the commits in flight (IN_FLIGHT) are busy
waits for the next one (group commit): whoever is waiting when a commit returns goes into one
transaction that checks each caller (the session of an access token, the key of an API
key, the account; in the transaction that inserts, so a session ended or a key revoked
before it commits stops the request), inserts every admitted job in one statement, and
commits once. Each request is answered only after that commit: as durable as before.
Nothing lingers: a request that finds no commit in flight starts one at once.

One request does not fail the others. A refused caller is answered alone; idempotency
keys dedupe inside the group as across groups (the statement's ON CONFLICT); a statement
that fails rolls the group back, and each of its requests is then tried alone, so only
the culprit fails (a batch stays all or nothing). A database that does not answer in time
(`db_request_timeout`) fails the group and everyone waiting behind it at once, with
`Unavailable` (503): nothing hangs. A request whose client left before its group started
is dropped, never inserted. A process stopping (the groups' tasks cancelled) answers every
request at once with 503: those waiting, that nothing was stored; those whose transaction
it cut short, to ask again with their Idempotency-Key (the commit may have happened).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.domain.jobs import Enqueued, NewJob
from conveyor.errors import ConveyorError, Unavailable
from conveyor.services.accounts import AccountService, Credential, User
from conveyor.services.flow import FlowService, QuotaAsk
from conveyor.services.jobs import JobService, Submission
from conveyor.store.transaction import Transaction

log = logging.getLogger("conveyor.intake")

GROUP_JOBS = 1000  # jobs per group transaction at most (a request is never split)
# Group transactions at once: on PostgreSQL a second group builds its rows and answers while
# the first's statement and commit wait on the database (one at a time, a 500-job batch
# left the process half idle: 13-15k jobs/s with 4 clients); SQLite has one writer.
IN_FLIGHT = {"postgresql": 2}
_CUT_SHORT = (
    "the server stopped before this submission's commit was confirmed; submit it again "
    "with the same Idempotency-Key to learn whether it was stored"
)


@dataclass
class _Request:
    credential: Credential
    jobs: list[NewJob]
    answer: asyncio.Future[tuple[User, list[Enqueued]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Intake:
    """`submit(credential, submissions)`: one request's jobs, committed with its neighbours'.

    One per process (the app's): its requests share a commit, `in_flight` groups at once
    (IN_FLIGHT: 2 on PostgreSQL, 1 on SQLite).
    """

    def __init__(
        self,
        jobs: JobService,
        accounts: AccountService,
        flow: FlowService | None = None,
        group_jobs: int = GROUP_JOBS,
        in_flight: int | None = None,
    ) -> None:
        self.jobs = jobs
        self.accounts = accounts
        self.flow = flow  # None: no quotas
        self.group_jobs = group_jobs
        self.in_flight = in_flight or IN_FLIGHT.get(jobs.backend.dialect, 1)
        self._waiting: list[_Request] = []
        self._committing: set[asyncio.Task[None]] = set()
        self.groups = 0  # transactions committed or tried (tests and the bench read it)

    async def submit(
        self, credential: Credential, submissions: Sequence[Submission]
    ) -> tuple[User, list[Enqueued]]:
        """The caller as checked, and their jobs once committed (all of them, or none).

        Bad input is refused before anything waits (InvalidInput); a refused caller gets
        the error their credential earns (Unauthenticated, Forbidden).
        """
        if any(s.callback_url for s in submissions):
            # Their check reads the account's callback secret: confirm the caller first.
            (verdict,) = await self.accounts.users_for([credential], verified=True)
            if isinstance(verdict, ConveyorError):
                raise verdict
        prepared = await self.jobs.prepare_many(submissions, credential.user_id)
        request = _Request(credential, prepared)
        self._waiting.append(request)
        self._committing = {t for t in self._committing if not t.done()}  # done: loop gone
        if len(self._committing) < self.in_flight:
            self._committing.add(asyncio.create_task(self._commit_waiting(), name="intake"))
        user, enqueued = await request.answer
        self.jobs.submitted(prepared, enqueued)
        return user, enqueued

    async def _commit_waiting(self) -> None:
        """Commit groups of whoever is waiting, until nobody is."""
        group: list[_Request] = []
        try:
            while self._waiting:
                group = self._next_group()
                await self._commit(group)
        finally:
            # Only if cancelled (shutdown): nobody is left hanging, neither the group whose
            # transaction was cut short (its commit may or may not have happened) nor those
            # waiting behind it (nothing of theirs was written).
            for request in group:
                _fail(request, Unavailable(_CUT_SHORT))
            for request in self._waiting:
                _fail(request, Unavailable("the server is stopping; nothing was stored"))
            self._waiting.clear()

    def _next_group(self) -> list[_Request]:
        size = jobs = 0
        for request in self._waiting:
            if size and jobs + len(request.jobs) > self.group_jobs:
                break
            size += 1
            jobs += len(request.jobs)
        group = self._waiting[:size]
        del self._waiting[:size]
        return [r for r in group if not r.answer.done()]  # a client that left: dropped

    async def _commit(self, group: list[_Request]) -> None:
        if not group:
            return
        self.groups += 1
        try:
            outcomes = await self._store(group)
        except Exception as exc:
            if isinstance(exc, Unavailable):
                # The database did not answer (or not in time): whoever waits for the next
                # group would wait as long again, so they are answered now too (503, retry).
                group = [*group, *self._waiting]
                self._waiting.clear()
            if len(group) == 1 or isinstance(exc, Unavailable):
                for request in group:
                    _fail(request, exc)
                return
            log.info("a group of %d submissions failed (%s); each is tried alone", len(group), exc)
            for request in group:
                await self._commit([request])
            return
        for request, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _fail(request, outcome)
            elif not request.answer.done():
                request.answer.set_result(outcome)

    async def _store(
        self, group: Sequence[_Request]
    ) -> list[tuple[User, list[Enqueued]] | ConveyorError]:
        """One transaction: every caller checked, every admitted job inserted, one commit."""
        async with self.jobs.backend.transaction() as tx:
            verdicts: list[User | ConveyorError] = list(
                await self.accounts.users_for([r.credential for r in group], tx, verified=True)
            )
            verdicts = await self._within_quotas(tx, group, verdicts)
            admitted = [r for r, v in zip(group, verdicts, strict=True) if isinstance(v, User)]
            jobs = [job for request in admitted for job in request.jobs]
            enqueued = iter(await self.jobs.store(jobs, tx) if jobs else [])
        outcomes: list[tuple[User, list[Enqueued]] | ConveyorError] = []
        for request, verdict in zip(group, verdicts, strict=True):
            if isinstance(verdict, User):
                outcomes.append((verdict, [next(enqueued) for _ in request.jobs]))
            else:
                outcomes.append(verdict)
        return outcomes

    async def _within_quotas(
        self, tx: Transaction, group: Sequence[_Request], verdicts: list[User | ConveyorError]
    ) -> list[User | ConveyorError]:
        """The verdicts, with QuotaExceeded for each admitted request that would take its
        owner beyond their queued cap (it alone fails; the group's others still commit)."""
        if self.flow is None:
            return verdicts
        admitted = [i for i, v in enumerate(verdicts) if isinstance(v, User)]
        asks = [_ask(verdicts[i], group[i]) for i in admitted]
        for i, refused in zip(admitted, await self.flow.check_quotas(tx, asks), strict=True):
            if refused is not None:
                verdicts[i] = refused
        return verdicts


def _ask(user: User | ConveyorError, request: _Request) -> QuotaAsk:
    assert isinstance(user, User)
    return QuotaAsk(user.id, user.max_queued, len(request.jobs))


def _fail(request: _Request, exc: BaseException) -> None:
    if not request.answer.done():
        request.answer.set_exception(exc)
