"""Read the execution records that workers append to a run directory (see peers/record.py).

The harness trusts only these files: a job counts as done when its line is there, lost when it
never appears, duplicated when it appears more than once. Files are read incrementally (new
bytes only, a partial last line kept for the next read), so polling a 20,000-line run stays
cheap while the workers are busy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Execution:
    """One line: job ``index`` ran from ``start`` to ``end`` (``time.time()`` seconds)."""

    index: int
    start: float
    end: float


@dataclass(frozen=True)
class Accounting:
    """How the executions of the expected jobs add up."""

    expected: int
    completed: int  # distinct expected indices seen
    lost: int  # expected indices never seen
    duplicated: int  # executions beyond the first, summed over expected indices


class RunDir:
    """A directory of ``worker-<pid>.log`` files, parsed as they grow."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.executions: list[Execution] = []
        self.counts: Counter[int] = Counter()
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def poll(self) -> None:
        """Parse whatever was appended since the last call."""
        for file in sorted(self.path.glob("worker-*.log")):
            offset = self._offsets.get(file, 0)
            with file.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            if not data:
                continue
            self._offsets[file] = offset + len(data)
            data = self._partial.pop(file, b"") + data
            *lines, rest = data.split(b"\n")
            if rest:
                self._partial[file] = rest
            for line in lines:
                self._add(line)

    def _add(self, line: bytes) -> None:
        fields = line.split()
        if len(fields) != 3:
            return  # not ours; never raised over, but never counted either
        execution = Execution(int(fields[0]), float(fields[1]), float(fields[2]))
        self.executions.append(execution)
        self.counts[execution.index] += 1

    def seen(self, expected: range) -> int:
        """How many distinct indices of ``expected`` have run at least once."""
        return sum(1 for index in expected if index in self.counts)

    def wait_for(
        self, expected: range, timeout_s: float, check: Callable[[], None] | None = None
    ) -> bool:
        """Poll until every index of ``expected`` has run, or ``timeout_s`` passes.

        ``check`` runs on every poll and may raise (e.g. a worker died) to stop waiting early.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            if check is not None:
                check()
            # len(counts) bounds seen(); checking it first keeps each poll O(1) while busy
            if len(self.counts) >= len(expected) and self.seen(expected) == len(expected):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)

    def account(self, expected: range) -> Accounting:
        completed = self.seen(expected)
        duplicated = sum(
            self.counts[index] - 1 for index in expected if self.counts.get(index, 0) > 1
        )
        return Accounting(len(expected), completed, len(expected) - completed, duplicated)

    def first_runs(self, expected: range) -> dict[int, Execution]:
        """The earliest-starting execution of each expected index that ran."""
        first: dict[int, Execution] = {}
        for execution in self.executions:
            if execution.index in expected:
                known = first.get(execution.index)
                if known is None or execution.start < known.start:
                    first[execution.index] = execution
        return first
