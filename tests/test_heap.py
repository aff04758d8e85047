"""heap.settle: a long-running process's start-up objects out of the collector's sight."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.metrics.samples import Samples
from tests.metrics.test_endpoint import free_port
from tests.support.processes import Cluster, eventually

PROBE = """
import gc
from conveyor import heap
from conveyor.runtime import Engine  # a process's start-up: the engine's modules
before = gc.get_freeze_count()
heap.settle()
print(before, gc.get_freeze_count(), gc.get_threshold()[0])
"""


def test_settle_freezes_what_the_process_holds_and_raises_the_young_threshold() -> None:
    """In a process of its own (what is frozen is never collected): the modules and objects
    alive at start-up are frozen, and young collections wait for 25,000 allocations."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, after, young = (int(x) for x in out)
    assert before == 0
    assert after > 10_000
    assert young == 25_000


CYCLES = """
import asyncio, weakref
from conveyor import heap

class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it

async def main() -> None:
    async with heap.settled(every=0.1):
        refs = []
        for _ in range(2_000):  # far under the young threshold: no allocation-driven collection
            node = Node()
            refs.append(weakref.ref(node))
            del node
        for _ in range(200):  # up to 10 s: the process does nothing else meanwhile
            if all(ref() is None for ref in refs):
                break
            await asyncio.sleep(0.05)
        print(sum(ref() is not None for ref in refs))

asyncio.run(main())
"""


def test_a_quiet_settled_process_still_collects_its_cyclic_garbage() -> None:
    """A settled process that allocates little (a scheduler between ticks) never reaches the
    young threshold: without a collection on a timer its cyclic garbage stayed for half an
    hour and more (the 30-minute SQLite soak: the scheduler grew 15 MiB). Collected on the
    timer, none of it outlives a few intervals."""
    out = subprocess.run(
        [sys.executable, "-c", CYCLES], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["0"]


@pytest.mark.slow
async def test_a_real_idle_scheduler_collects_on_the_timer(cluster: Cluster) -> None:
    """`conveyor scheduler` itself, idle (nothing to fire, promote or prune): its middle
    generation is collected (`python_gc_collections_total`, Python's own counter on
    /metrics) though it allocates far too little to reach any threshold. Without the timer
    the count stood still from start-up on."""
    port = free_port()
    scheduler = cluster.spawn("scheduler", ["scheduler", "--metrics-port", str(port)], {})
    seen: list[float] = []
    async with httpx.AsyncClient(timeout=5) as client:

        async def middle_collections() -> float | None:
            try:
                answer = await client.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                return None  # not serving yet
            return Samples(answer.text).get("python_gc_collections_total", generation="1")

        async def serving() -> bool:
            count = await middle_collections()
            if count is not None:
                seen.append(count)
            return count is not None

        async def collected_since() -> bool:
            count = await middle_collections()
            return count is not None and count > seen[0]

        await eventually(serving, timeout=60, what="the scheduler's /metrics")
        await eventually(collected_since, timeout=60, every=0.5, what="a timed collection")
    assert scheduler.popen.poll() is None, scheduler.output()
