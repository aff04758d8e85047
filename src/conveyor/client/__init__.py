"""The Python client for a Conveyor server: `Client` (blocking) and `AsyncClient`.

    from conveyor.client import Client

    with Client("http://127.0.0.1:8080", api_key="cvk_...") as conveyor:
        job = conveyor.submit("sleep", {"seconds": 2})
        done = conveyor.wait(job.id, timeout=60, on_progress=print)

It needs httpx and pydantic only (never the server's FastAPI or database code). docs/client.md
has the whole story.
"""

from __future__ import annotations

from conveyor.client.async_client import AsyncClient
from conveyor.client.calls import JobSpec
from conveyor.client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    ConveyorAPIError,
    ConveyorClientError,
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from conveyor.client.models import (
    Job,
    JobError,
    JobEvent,
    JobResult,
    JobType,
    Limit,
    LimitKey,
    Limits,
    Progress,
    Schedule,
    Tokens,
    User,
    WaitingReason,
    Workflow,
    WorkflowStep,
)
from conveyor.client.sync import Client
from conveyor.client.transport import RetryPolicy
from conveyor.client.workflows import (
    NestedSpec,
    StepSpec,
    WorkflowSpec,
    chain,
    chord,
    group,
    nested,
    step,
    workflow,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ConveyorAPIError",
    "ConveyorClientError",
    "FieldError",
    "Forbidden",
    "Job",
    "JobError",
    "JobEvent",
    "JobResult",
    "JobSpec",
    "JobType",
    "Limit",
    "LimitKey",
    "Limits",
    "NestedSpec",
    "NotFound",
    "PayloadTooLarge",
    "Progress",
    "QuotaExceeded",
    "RateLimited",
    "RetryPolicy",
    "Schedule",
    "ServerError",
    "ServiceUnavailable",
    "StepSpec",
    "Tokens",
    "Unauthorized",
    "User",
    "ValidationFailed",
    "WaitTimeout",
    "WaitingReason",
    "Workflow",
    "WorkflowSpec",
    "WorkflowStep",
    "chain",
    "chord",
    "group",
    "nested",
    "step",
    "workflow",
]
