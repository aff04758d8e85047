"""Which jobs' e-mails went out: the record that makes the `email` job send at most once."""

from __future__ import annotations

from sqlalchemy import insert, select

from conveyor.domain.clock import utcnow
from conveyor.store.database import Database
from conveyor.store.tables import email_deliveries


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def sent(self, job_id: str) -> str | None:
        """The message id of this job's e-mail if it was already sent."""
        query = select(email_deliveries.c.message_id).where(email_deliveries.c.job_id == job_id)
        async with self.db.read() as conn:
            found: str | None = await conn.scalar(query)
        return found

    async def record(self, job_id: str, message_id: str, recipient: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                insert(email_deliveries).values(
                    job_id=job_id, message_id=message_id, recipient=recipient, sent_at=utcnow()
                )
            )
