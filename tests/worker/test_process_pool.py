"""The process pool with real children: a death costs only its own job (issue #13 item 3).

The pool alone first (which call a dead child is charged with, recycling), then a real worker
on both databases: a child that calls os._exit(3) or is SIGKILLed fails its own job's attempt
with an error that says how it died, while the jobs waiting in the pool complete on their
first attempt and the pool keeps working after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.worker.context import JobInfo
from conveyor.worker.process_pool import ChildLimits, ProcessDied, ProcessPool
from conveyor.worker.registry import Registry
from tests.worker.test_worker import running, terminal, wait_for


# ---- run in the children (module level: a spawned child imports them by name) ----------------
def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def exit_with(code: int) -> None:
    os._exit(code)


def wait_for_kill(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)


def hold_memory(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
    return os.getpid()


def raise_value_error() -> None:
    raise ValueError("bad input")


class TwoPartError(Exception):
    """Pickles, but does not unpickle: its args are the message, its __init__ wants two."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def raise_two_part_error() -> None:
    raise TwoPartError("lost", "why")


class Crash(BaseModel):
    code: int = 3


class Naps(BaseModel):
    seconds: float = 0.0


class Victim(BaseModel):
    pid_file: str


def crash_job(info: JobInfo, payload: Crash) -> None:
    os._exit(payload.code)


def nap_job(info: JobInfo, payload: Naps) -> int:
    time.sleep(payload.seconds)
    return os.getpid()


def victim_job(info: JobInfo, payload: Victim) -> None:
    wait_for_kill(payload.pid_file)


# ---- the pool alone --------------------------------------------------------------------------
async def test_a_dead_child_fails_only_the_call_it_ran() -> None:
    pool = ProcessPool(1)
    try:
        first = await pool.run(pid_after, 0)  # the child is up before the crash is queued
        crash = asyncio.create_task(pool.run(exit_with, 3))
        waiting = [asyncio.create_task(pool.run(pid_after, 0)) for _ in range(3)]
        with pytest.raises(ProcessDied) as died:
            await crash
        pids = await asyncio.gather(*waiting)  # queued behind the crash: none of them lost
        assert died.value.exitcode == 3 and died.value.pid == first
        assert str(died.value) == (
            f"the process-pool child (pid {first}) running this job exited with code 3"
        )
        assert first not in pids and len(set(pids)) == 1  # one replacement child ran them all
    finally:
        pool.shutdown()


async def test_a_sigkilled_child_is_named_by_its_signal(tmp_path: Path) -> None:
    pool = ProcessPool(2)
    pid_file = tmp_path / "pid"
    try:
        victim = asyncio.create_task(pool.run(wait_for_kill, str(pid_file)))
        neighbour = asyncio.create_task(pool.run(pid_after, 1.0))
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(ProcessDied, match=r"was killed by signal 9 \(SIGKILL\)"):
            await victim
        assert await neighbour != int(pid_file.read_text())  # the other child was untouched
        assert await pool.run(pid_after, 0) != int(pid_file.read_text())
    finally:
        pool.shutdown()


async def test_a_handler_exception_keeps_its_child_and_its_remote_traceback() -> None:
    pool = ProcessPool(1)
    try:
        before = await pool.run(pid_after, 0)
        with pytest.raises(ValueError, match="bad input") as raised:
            await pool.run(raise_value_error)
        assert "raise_value_error" in str(raised.value.__cause__)
        assert await pool.run(pid_after, 0) == before
    finally:
        pool.shutdown()


async def test_an_answer_the_worker_cannot_read_is_the_call_error_not_the_childs() -> None:
    pool = ProcessPool(1)
    try:
        before = await pool.run(pid_after, 0)
        with pytest.raises(TypeError, match="could not be read in the worker"):
            await pool.run(raise_two_part_error)
        assert await pool.run(pid_after, 0) == before
    finally:
        pool.shutdown()


async def test_children_are_recycled_after_max_tasks() -> None:
    pool = ProcessPool(1, ChildLimits(max_tasks=2))
    try:
        pids = [await pool.run(pid_after, 0) for _ in range(5)]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    finally:
        pool.shutdown()


async def test_children_are_recycled_above_max_memory() -> None:
    pool = ProcessPool(1, ChildLimits(max_memory_mb=400))
    try:
        small = await pool.run(pid_after, 0)
        assert await pool.run(pid_after, 0) == small  # a fresh interpreter is well below it
        big = await pool.run(hold_memory, 500)
        assert big == small
        assert await pool.run(pid_after, 0) != big  # replaced after the job that grew it
    finally:
        pool.shutdown()


async def test_a_cancelled_call_kills_its_child_and_the_pool_goes_on() -> None:
    pool = ProcessPool(1)
    try:
        first = await pool.run(pid_after, 0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await pool.run(pid_after, 60)
        assert first not in pool.pids
        assert await pool.run(pid_after, 0) != first
    finally:
        pool.shutdown()


# ---- a real worker, both databases -----------------------------------------------------------
def pool_registry() -> Registry:
    reg = Registry()
    reg.job("crash", executor="process", max_attempts=2)(crash_job)
    reg.job("nap", executor="process", max_attempts=3)(nap_job)
    reg.job("victim", executor="process", max_attempts=1)(victim_job)
    return reg


async def enqueue(backend: QueueBackend, job_type: str, attempts: int, **payload: object) -> str:
    (e,) = await backend.enqueue([NewJob(type=job_type, payload=payload, max_attempts=attempts)])
    return e.id


async def test_a_worker_charges_a_child_exit_to_its_job_only(backend: QueueBackend) -> None:
    async with running(backend, pool_registry(), processes=1):
        warm = await enqueue(backend, "nap", 3, seconds=0)
        await wait_for(backend, warm, terminal, 60)  # the child is up
        crash = await enqueue(backend, "crash", 1, code=3)
        innocent = [await enqueue(backend, "nap", 3, seconds=0.2) for _ in range(4)]
        crashed = await wait_for(backend, crash, terminal, 60)
        done = [await wait_for(backend, job_id, terminal, 60) for job_id in innocent]
        after = await wait_for(backend, await enqueue(backend, "nap", 3), terminal, 60)
    assert crashed.state is JobState.FAILED
    (error,) = crashed.errors
    assert error["type"] == "ProcessDied"
    assert error["message"].endswith("running this job exited with code 3")
    assert [(r.state, r.attempt, r.errors) for r in done] == [(JobState.COMPLETED, 1, [])] * 4
    assert after.state is JobState.COMPLETED and after.attempt == 1


async def test_a_worker_charges_a_sigkilled_child_to_its_job_only(
    backend: QueueBackend, tmp_path: Path
) -> None:
    pid_file = tmp_path / "victim.pid"
    async with running(backend, pool_registry(), processes=2):
        victim = await enqueue(backend, "victim", 1, pid_file=str(pid_file))
        innocent = [await enqueue(backend, "nap", 3, seconds=0.5) for _ in range(4)]
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the victim never started"
            await asyncio.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        killed = await wait_for(backend, victim, terminal, 60)
        done = [await wait_for(backend, job_id, terminal, 60) for job_id in innocent]
    assert killed.state is JobState.FAILED
    assert killed.errors[0]["type"] == "ProcessDied"
    assert killed.errors[0]["message"].endswith("was killed by signal 9 (SIGKILL)")
    assert [(r.state, r.attempt) for r in done] == [(JobState.COMPLETED, 1)] * 4


async def test_a_worker_recycles_children_after_max_tasks(backend: QueueBackend) -> None:
    async with running(backend, pool_registry(), processes=1, child_limits=ChildLimits(1)):
        ids = [await enqueue(backend, "nap", 3) for _ in range(3)]
        done = [await wait_for(backend, job_id, terminal, 60) for job_id in ids]
    assert all(r.state is JobState.COMPLETED for r in done)
    assert len({r.result for r in done}) == 3  # each job in a new child


async def test_a_big_worker_does_not_make_its_fresh_children_look_big() -> None:
    """A child's memory is its own: the peak RSS Linux reports (ru_maxrss) carries the
    forking parent's resident size across exec, so a worker (here: this test process) above
    the limit recycled every child after every job (CI, where the pytest process had grown)."""
    ballast = bytearray(450 * 1024 * 1024)  # the parent, resident above the children's limit
    ballast[::4096] = b"x" * len(ballast[::4096])
    pool = ProcessPool(1, ChildLimits(max_memory_mb=400))
    try:
        first = await pool.run(pid_after, 0)
        assert await pool.run(pid_after, 0) == first
    finally:
        pool.shutdown()
        del ballast
