"""`email`: send one message through the configured mail backend, at most once per job."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.retry import RetryPolicy
from conveyor.mail import Message
from conveyor.store.deliveries import DeliveryStore
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class EmailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    subject: str = Field(max_length=998, pattern=r"^[^\r\n]*$", description="One line.")
    text: str = Field("", max_length=1_000_000, description="Plain-text body (may be empty).")
    html: str | None = Field(None, max_length=1_000_000)


class EmailResult(BaseModel):
    message_id: str
    already_sent: bool = False


@blueprint.job(
    "email", queue="mail", max_attempts=5, timeout=60, retry=RetryPolicy(base=5, cap=600)
)
async def send_email(ctx: JobContext, payload: EmailPayload) -> EmailResult:
    """Send the message; a retry after a crash finds the recorded send and does not resend."""
    deliveries = DeliveryStore(ctx.resources.backend.db)
    previous = await deliveries.sent(ctx.job_id)
    if previous is not None:
        return EmailResult(message_id=previous, already_sent=True)
    message = Message(to=payload.to, subject=payload.subject, text=payload.text, html=payload.html)
    message_id = await ctx.resources.mail.send(message)
    await deliveries.record(ctx.job_id, message_id, payload.to)  # before the job is acknowledged
    return EmailResult(message_id=message_id)
