"""A batch of one job type has its payloads checked together; what it stores and what it
refuses are what checking each job alone gives."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conveyor.errors import ConveyorError, InvalidInput, UnknownJobType
from conveyor.runtime import load_handlers
from conveyor.services.jobs import BATCH_CHECK_MIN, JobService, Submission
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import jobs

N = BATCH_CHECK_MIN + 2


def sleeps(n: int = N) -> list[Submission]:
    return [Submission(type="sleep", payload={"seconds": i / 10}) for i in range(n)]


async def refusal(service: JobService, batch: list[Submission]) -> ConveyorError:
    with pytest.raises(ConveyorError) as caught:
        await service.submit_many(batch)
    return caught.value


async def stored(backend: QueueBackend) -> list[dict[str, object]]:
    async with backend.db.read() as conn:
        rows = await conn.execute(select(jobs.c.payload).order_by(jobs.c.id))
        return [row.payload for row in rows]


async def test_a_batch_stores_each_payload_as_checking_it_alone_would(
    backend: QueueBackend,
) -> None:
    service = JobService(backend, load_handlers([]))
    alone = service.prepare(Submission(type="sleep", payload={"seconds": 0.3})).payload

    await service.submit_many(sleeps())

    payloads = await stored(backend)
    assert len(payloads) == N
    assert payloads[3] == alone  # its defaults filled in, as alone
    assert [p["seconds"] for p in payloads] == [i / 10 for i in range(N)]


async def test_a_bad_payload_in_a_batch_is_named_as_when_checked_alone(
    backend: QueueBackend,
) -> None:
    service = JobService(backend, load_handlers([]))
    batch = sleeps()
    batch[5] = Submission(type="sleep", payload={"seconds": -1, "nap": True})
    batch[7] = Submission(type="sleep", payload={"steps": 0})
    alone = await refusal(service, [batch[5]])

    refused = await refusal(service, batch)

    assert isinstance(refused, InvalidInput)
    assert str(refused) == str(alone) == "invalid payload for job type 'sleep'"
    assert refused.details == alone.details  # the fifth job's two errors, located in it
    assert {tuple(e["loc"]) for e in refused.details["errors"]} == {("seconds",), ("nap",)}
    assert await stored(backend) == []


async def test_an_earlier_jobs_other_fault_still_comes_first(backend: QueueBackend) -> None:
    service = JobService(backend, load_handlers([]))
    batch = sleeps()
    batch[2] = Submission(type="sleep", payload={}, max_attempts=0)
    batch[6] = Submission(type="sleep", payload={"seconds": -1})

    refused = await refusal(service, batch)

    assert isinstance(refused, InvalidInput)
    assert refused.details.get("field") == "max_attempts"
    batch[2] = Submission(type="no_such_type")
    assert isinstance(await refusal(service, batch), UnknownJobType)
    assert await stored(backend) == []
