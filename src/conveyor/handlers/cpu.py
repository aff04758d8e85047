"""`cpu_hash`: CPU-bound work, run in a process pool so it never blocks the worker's loop."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobInfo

blueprint = Blueprint()


class CpuHashPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field("conveyor", max_length=10_000)
    rounds: int = Field(100_000, ge=1, le=50_000_000, description="SHA-256 rounds.")


class CpuHashResult(BaseModel):
    digest: str
    rounds: int


@blueprint.job("cpu_hash", queue="default", max_attempts=2, executor="process")
def cpu_hash(info: JobInfo, payload: CpuHashPayload) -> CpuHashResult:
    """Hash `data` with SHA-256 `rounds` times, in another process."""
    digest = payload.data.encode()
    for _ in range(payload.rounds):
        digest = hashlib.sha256(digest).digest()
    return CpuHashResult(digest=digest.hex(), rounds=payload.rounds)
