"""A submit's answer is serialised from the job records directly (`schemas.jobs_json`), not
through a `JobOut` per job: it must give the same bytes as the model would."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter

from conveyor.api.schemas import JobSubmitted, _JobOutFields, job_json, jobs_json
from conveyor.domain.jobs import JobRecord, NewJob
from conveyor.domain.states import JobState
from conveyor.store.jobs import inserted_record, job_row

NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def records() -> list[JobRecord]:
    fresh = inserted_record(job_row(NewJob(type="noop", payload={}), NOW))
    full = inserted_record(
        job_row(
            NewJob(
                type="sleep",
                payload={"seconds": 2, "nested": {"a": [1, 2.5, None, "é"]}},
                queue="q",
                priority=-3,
                max_attempts=7,
                run_at=NOW + timedelta(hours=1),
                timeout_s=30,  # an int: JobOut shows 30.0
                idempotency_key="k-1",
                owner_id="user-1",
                tags=("a", "b"),
            ),
            NOW,
        )
    )
    failed = replace(
        full,
        state=JobState.FAILED,
        attempt=2,
        result={"partial": True},
        progress=40,
        progress_message="halfway",
        errors=[
            {"attempt": 1, "at": "2030-01-02T03:04:06Z", "type": "E", "message": "m",
             "traceback": "tb"},
            {"type": "F", "message": "n", "extra": "dropped"},
        ],
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=1),
        schedule_id="s-1",
    )  # fmt: skip
    return [fresh, full, failed]


@pytest.mark.parametrize("tracebacks", [False, True])
def test_the_answer_has_the_bytes_of_jobout(tracebacks: bool) -> None:
    answers = [
        (job, "https://example.com/hook" if i else None, i == 1) for i, job in enumerate(records())
    ]
    models = [
        JobSubmitted.of(job, tracebacks=tracebacks, callback_url=url).model_copy(
            update={"duplicate": duplicate}
        )
        for job, url, duplicate in answers
    ]
    expected = TypeAdapter(list[JobSubmitted]).dump_json(models)
    assert jobs_json(answers, tracebacks=tracebacks) == expected
    for (job, url, duplicate), model in zip(answers, models, strict=True):
        answer = job_json(job, url, tracebacks=tracebacks, duplicate=duplicate)
        assert answer == model.model_dump_json().encode()


def test_the_answer_has_the_fields_of_jobout() -> None:
    assert list(_JobOutFields.__annotations__) == list(JobSubmitted.model_fields)
