"""heap.settle: a long-running process's start-up objects out of the collector's sight."""

from __future__ import annotations

import subprocess
import sys

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
