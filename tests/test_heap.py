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
