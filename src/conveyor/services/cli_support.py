"""What the `conveyor` command needs from the engine that no service offers yet.

The CLI is a door: it must reach the engine through services, never the store. These four
calls are the ones it made to the store directly; each is written as the service method it
should become (named in its docstring), to be folded into that service.
"""

from __future__ import annotations

from conveyor.domain.queues import QueueCount
from conveyor.services.accounts import AccountService, User, _public
from conveyor.services.events import EventFeed
from conveyor.services.jobs import JobService
from conveyor.services.queues import QueueService
from conveyor.store.database import Database
from conveyor.store.migrate import migrate


async def migrate_database(database_url: str) -> None:
    """Bring the database's schema up to date (`conveyor.runtime.migrate_database`): only
    a connection is opened, no engine (no handlers loaded, no secret key made)."""
    db = Database(database_url)
    try:
        await migrate(db)
    finally:
        await db.dispose()


async def queue_counts(queues: QueueService) -> list[QueueCount]:
    """Jobs per queue and state, everyone's, sorted (`QueueService.counts`)."""
    return await queues.backend.counts()


def job_events(jobs: JobService) -> EventFeed:
    """The event outbox as subscribers read it (`Engine.events`, built once)."""
    return EventFeed(jobs.backend)


async def find_user(accounts: AccountService, email: str) -> User | None:
    """The account with this e-mail, compared trimmed and lower-cased; None when there is
    none (`AccountService.find_user`, for admins)."""
    record = await accounts.store.find_by_email(email.strip().lower())
    return None if record is None else _public(record)
