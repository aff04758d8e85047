"""Fair dispatch on both databases: tags at submit, claims by tag (docs/flow-control.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, update

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ErrorInfo, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import jobs, users
from conveyor.store.users import UserStore
from tests.store.helpers import job

W = "worker-fair"


def burst(owner: str, count: int, *, fair: bool = True, **fields: object) -> list[NewJob]:
    """`count` ready jobs of `owner`, under its own fair key unless `fair` is off."""
    key = owner if fair else None
    return [job(n=n, owner_id=owner, fair_key=key, **fields) for n in range(count)]


async def enqueue_all(backend: QueueBackend, new: Sequence[NewJob], per_call: int = 1000) -> None:
    for start in range(0, len(new), per_call):
        await backend.enqueue(new[start : start + per_call])


async def claim_order(backend: QueueBackend, count: int, batch: int = 500) -> list[str]:
    """The owners of the next `count` jobs claimed, in claim order: exact with `batch` 1
    (a claim returns its batch in no particular order; the next batch comes after it)."""
    order: list[str] = []
    while len(order) < count:
        claimed = await backend.claim(W, ["default"], min(batch, count - len(order)), 30)
        if not claimed:
            break
        order.extend(c.owner_id for c in claimed)
    return order


async def user(backend: QueueBackend, name: str, weight: float = 1.0) -> str:
    made = await UserStore(backend.db).create_user(
        email=f"{name}@example.com", password_hash="$argon2id$x"
    )
    assert made is not None
    if weight != 1.0:  # the admin door is another's: a direct UPDATE, as the brief says
        async with backend.db.write() as conn:
            await conn.execute(
                update(users).where(users.c.id == made.id).values(fair_weight=weight)
            )
    return made.id


async def tag_of(backend: QueueBackend, job_id: str) -> float:
    async with backend.db.read() as conn:
        value = (await conn.execute(select(jobs.c.fair_tag).where(jobs.c.id == job_id))).scalar()
    assert isinstance(value, float)
    return value


async def test_a_later_tenant_starts_within_the_bound_behind_a_10k_burst(
    backend: QueueBackend,
) -> None:
    await enqueue_all(backend, burst("A", 10_000))
    await backend.enqueue(burst("B", 10))

    order = await claim_order(backend, 30, batch=1)

    positions = [n for n, owner in enumerate(order, start=1) if owner == "B"]
    # The documented bound, equal weights: B's k-th job is among the first 2k + 1 claims.
    assert len(positions) == 10 and positions[-1] <= 2 * 10 + 1, positions
    assert all(p <= 2 * k + 1 for k, p in enumerate(positions, start=1)), positions


async def test_without_fair_keys_the_later_tenant_starts_last(backend: QueueBackend) -> None:
    await enqueue_all(backend, burst("A", 10_000, fair=False))
    await backend.enqueue(burst("B", 10, fair=False))

    first = await claim_order(backend, 10_000)

    assert "B" not in first and await claim_order(backend, 100) == ["B"] * 10


async def test_weights_3_to_1_share_a_long_drain_within_10_percent(backend: QueueBackend) -> None:
    heavy, light = await user(backend, "heavy", 3.0), await user(backend, "light")
    await enqueue_all(backend, burst(heavy, 3000) + burst(light, 3000))

    shares = Counter(await claim_order(backend, 2000, batch=100))

    assert shares[heavy] + shares[light] == 2000
    ratio = shares[heavy] / shares[light]
    assert 2.7 <= ratio <= 3.3, shares


async def test_a_weight_counts_only_for_its_own_owner_key(backend: QueueBackend) -> None:
    """A payload key that names a weighted user is not that user: weight 1."""
    heavy = await user(backend, "heavy", 3.0)
    borrowed = [job(n=n, owner_id="mallory", fair_key=heavy) for n in range(30)]
    await backend.enqueue(borrowed + burst("B", 30))

    shares = Counter(await claim_order(backend, 20, batch=1))

    assert abs(shares["mallory"] - shares["B"]) <= 2, shares


async def test_priority_comes_first_across_tenants_and_holds_inside_one(
    backend: QueueBackend,
) -> None:
    await enqueue_all(backend, burst("A", 200))
    urgent = await backend.enqueue(burst("A", 5, priority=10))
    await backend.enqueue(burst("B", 5))

    first = await backend.claim(W, ["default"], 5, 30)
    then = await claim_order(backend, 12, batch=1)

    assert {c.id for c in first} == {e.id for e in urgent}  # strict priority, A's or not
    assert then.count("B") >= 5  # fairness inside priority 0


async def test_a_lone_tenant_drains_in_submission_order(backend: QueueBackend) -> None:
    submitted = await backend.enqueue(burst("A", 30))
    claimed = [c for _ in range(30) for c in await backend.claim(W, ["default"], 1, 30)]
    assert [c.id for c in claimed] == [e.id for e in submitted]


async def test_a_new_key_starts_at_the_head_after_a_partial_drain(backend: QueueBackend) -> None:
    await enqueue_all(backend, burst("A", 500))
    await claim_order(backend, 300)
    await backend.enqueue(burst("B", 3))

    order = await claim_order(backend, 10, batch=1)

    # V is A's next tag; B's k-th tag is V + k, tied with A's (which is older: first).
    assert [i for i, o in enumerate(order) if o == "B"] == [2, 4, 6], order


async def test_retries_go_by_due_time_and_promotion_keeps_the_tag(backend: QueueBackend) -> None:
    await enqueue_all(backend, burst("A", 20))
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    retry_at = utcnow() + timedelta(milliseconds=200)
    error = ErrorInfo("E", "m")
    await backend.finish(W, [Outcome(claimed.id, 1, "retry", error=error, retry_at=retry_at)])

    assert abs(await tag_of(backend, claimed.id) - retry_at.timestamp()) < 0.01
    later = utcnow() + timedelta(hours=1)
    (scheduled,) = await backend.enqueue([job(owner_id="A", fair_key="A", run_at=later)])
    assert await tag_of(backend, scheduled.id) >= later.timestamp()
    await eventually_promoted(backend, 1)
    assert abs(await tag_of(backend, claimed.id) - retry_at.timestamp()) < 0.01


async def test_a_users_retry_and_a_rescue_requeue_by_due_time(backend: QueueBackend) -> None:
    await enqueue_all(backend, burst("A", 5))
    first, second = await backend.claim(W, ["default"], 2, lease_s=0.01)
    await backend.finish(W, [Outcome(first.id, 1, "failed", error=ErrorInfo("E", "m"))])
    before = utcnow().timestamp()
    await backend.retry(first.id)
    assert before - 0.01 <= await tag_of(backend, first.id) <= utcnow().timestamp() + 0.01

    await eventually_rescued(backend, second.id)
    assert second.run_at is not None
    assert abs(await tag_of(backend, second.id) - second.run_at.timestamp()) < 0.01


async def test_an_administrators_move_to_queued_runs_it_by_now(backend: QueueBackend) -> None:
    later = utcnow() + timedelta(hours=1)
    (scheduled,) = await backend.enqueue([job(owner_id="A", fair_key="A", run_at=later)])
    before = utcnow().timestamp()
    await backend.set_state(scheduled.id, JobState.QUEUED)
    assert before - 0.01 <= await tag_of(backend, scheduled.id) <= utcnow().timestamp() + 0.01


async def eventually_promoted(backend: QueueBackend, count: int) -> None:
    promoted = 0
    for _ in range(200):
        promoted += await backend.promote_due()
        if promoted >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the retry was never promoted")


async def eventually_rescued(backend: QueueBackend, job_id: str) -> None:
    for _ in range(200):
        if job_id in (await backend.rescue_expired()).requeued:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the expired job was never rescued")
