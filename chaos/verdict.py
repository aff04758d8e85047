"""Jepsen's total-queue check on what the handlers recorded, and one row of the table.

What went in: the submitter's ledger (each job's index and whether the API acknowledged it,
refused it, or left it unknown: a timeout may or may not have committed). What came out: the
handlers' records (`chaos.handlers`) and, at the end, each job's state in the database.

* A job is **ok** when the database says ``completed`` and a handler recorded its end.
* **lost**: acknowledged (or unknown but present in the database), terminal, and not ok: it
  was dead-lettered, cancelled, or marked completed without a recorded execution. An
  acknowledged job missing from the database is lost too.
* **stuck**: not terminal when the scenario's drain deadline passed.
* A **duplicate** is a job that started more than once. Each earlier start is *explained*
  when a fault accounts for it: its worker was killed or exited, the database was out while
  it ran (a cut, partition, restart or failover: lease expiry is then the contract), or the
  job is itself the fault (the crashing or blocking job). An unexplained duplicate is a
  bug: a live, connected worker lost a job.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TERMINAL = frozenset({"completed", "failed", "cancelled"})
OUTAGES = frozenset({"cut", "partition", "restart", "failover"})


@dataclass(frozen=True)
class Execution:
    """One line of a handler's record."""

    event: str  # "start" or "end"
    index: int
    job_id: str
    attempt: int
    owner: int  # the worker process's pid
    t: float  # unix time


@dataclass
class Fault:
    """One injected fault: what, when, and which process or job it hit."""

    kind: str  # kill-worker, kill-scheduler, kill-relay, cut, partition, restart, failover,
    # crash, block
    start: float
    end: float
    pid: int | None = None  # the process killed
    index: int | None = None  # the job that is the fault (crash, block)
    recovery: float | None = None  # seconds until work resumed; None: never, or not measured
    gone: float | None = None  # a kill: the process seen gone by then (it ran until then)


@dataclass(frozen=True)
class Submission:
    index: int
    outcome: str  # "acked", "refused" (a definite error), "unknown" (no answer)
    job_id: str | None
    t: float
    latency: float
    fault_job: bool = False  # the crashing or blocking job: not judged


@dataclass(frozen=True)
class StoredJob:
    job_id: str
    index: int
    state: str
    # The attempts the rescuer took back (a LeaseExpired error in the job's row): their
    # outcome was never committed, since the rescue and the finish are both fenced on the
    # running attempt.
    rescued: frozenset[int] = frozenset()


@dataclass
class Tally:
    jobs: int = 0
    ok: int = 0
    lost: list[int] = field(default_factory=list)  # indexes
    stuck: list[int] = field(default_factory=list)
    duplicates: int = 0
    unexplained: list[int] = field(default_factory=list)  # indexes of unexplained duplicates
    lost_events: int = 0


def read_executions(directory: Path) -> list[Execution]:
    found: list[Execution] = []
    for path in sorted(directory.glob("exec-*.log")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 6:  # a line cut short by SIGKILL mid-write cannot happen
                continue  # (one write(2) each), but a torn file must not crash the judge
            event, index, job_id, attempt, owner, t = parts
            found.append(Execution(event, int(index), job_id, int(attempt), int(owner), float(t)))
    return sorted(found, key=lambda e: e.t)


def tally(
    submissions: Sequence[Submission],
    stored: Iterable[StoredJob],
    executions: Sequence[Execution],
    faults: Sequence[Fault],
    lease: float,
) -> Tally:
    by_index: dict[int, list[StoredJob]] = defaultdict(list)
    for job in stored:
        by_index[job.index].append(job)
    ended = {e.job_id for e in executions if e.event == "end"}
    fault_jobs = {s.index for s in submissions if s.fault_job}
    result = Tally()
    for sub in submissions:
        if sub.fault_job or sub.outcome == "refused":
            continue
        rows = by_index.get(sub.index, [])
        if sub.outcome == "unknown" and not rows:
            continue  # never committed: nothing was promised
        result.jobs += 1
        _judge(sub.index, rows, ended, result)
    _duplicates(executions, faults, fault_jobs, lease, result)
    return result


def _judge(index: int, rows: Sequence[StoredJob], ended: set[str], result: Tally) -> None:
    if not rows:
        result.lost.append(index)
    elif any(r.state == "completed" and r.job_id in ended for r in rows):
        result.ok += 1
    elif all(r.state in TERMINAL for r in rows):
        result.lost.append(index)
    else:
        result.stuck.append(index)


def _duplicates(
    executions: Sequence[Execution],
    faults: Sequence[Fault],
    fault_jobs: set[int],
    lease: float,
    result: Tally,
) -> None:
    starts: dict[str, list[Execution]] = defaultdict(list)
    for e in executions:
        if e.event == "start":
            starts[e.job_id].append(e)
    dead = {f.pid for f in faults if f.pid is not None}
    for runs in starts.values():
        if len(runs) < 2:
            continue
        result.duplicates += 1
        earlier = itertools.pairwise(runs)
        if not all(_explained(a, b, dead, faults, fault_jobs, lease) for a, b in earlier):
            result.unexplained.append(runs[0].index)


def _explained(
    run: Execution,
    again: Execution,
    dead: set[int],
    faults: Sequence[Fault],
    fault_jobs: set[int],
    lease: float,
) -> bool:
    """Whether a fault accounts for `run` being started again (at `again.t`)."""
    if run.index in fault_jobs or run.owner in dead:
        return True
    # The database was out while the job ran: its lease may rightly expire (a lease's
    # worth of margin after the outage, for the heartbeat that was due during it).
    return any(f.kind in OUTAGES and f.start <= again.t and run.t <= f.end + lease for f in faults)


def kill_recovery(executions: Sequence[Execution], fault: Fault) -> float | None:
    """Seconds from the kill until the last job the killed worker held started again
    elsewhere (None: one never did; 0.0: it held nothing)."""
    held = _held_at(executions, fault.pid, fault.start)
    worst = 0.0
    for job_id in held:
        again = [e.t for e in executions if e.event == "start" and e.job_id == job_id]
        later = [t for t in again if t > fault.start]
        if not later:
            return None
        worst = max(worst, min(later) - fault.start)
    return worst


def _held_at(executions: Sequence[Execution], pid: int | None, when: float) -> set[str]:
    open_runs: set[tuple[str, int]] = set()
    for e in executions:
        if e.owner != pid or e.t > when:
            continue
        key = (e.job_id, e.attempt)
        if e.event == "start":
            open_runs.add(key)
        else:
            open_runs.discard(key)
    return {job_id for job_id, _ in open_runs}


def outage_recovery(executions: Sequence[Execution], fault: Fault) -> float | None:
    """Seconds from the end of an outage until the first job started after it."""
    after = [e.t for e in executions if e.event == "start" and e.t > fault.end]
    return min(after) - fault.end if after else None


def most_running(
    executions: Sequence[Execution],
    faults: Sequence[Fault],
    key_of: Callable[[int], str],
    until: float,
) -> dict[str, int]:
    """Per key, the most attempts running at one moment, from the recorded intervals alone
    (not Conveyor's counters): an attempt runs from its start to its end; one without an end
    ran until its worker was killed (the kill's time), else until `until`."""
    killed = {f.pid: f.start for f in faults if f.pid is not None}
    ends = {(e.job_id, e.attempt): e.t for e in executions if e.event == "end"}
    moments: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for e in executions:
        if e.event != "start":
            continue
        stop = ends.get((e.job_id, e.attempt), killed.get(e.owner, until))
        key = key_of(e.index)
        moments[key] += [(e.t, 1), (stop, -1)]
    most: dict[str, int] = {}
    for key, changes in moments.items():
        running = peak = 0
        for _, change in sorted(changes):  # at one instant an end (-1) comes before a start
            running += change
            peak = max(peak, running)
        most[key] = peak
    return most


def completed_twice(
    executions: Sequence[Execution],
    faults: Sequence[Fault],
    lease: float,
    stored: Iterable[StoredJob] = (),
) -> list[int]:
    """Indexes of jobs whose handler ended more than once, unless each earlier end is
    explained: by an outage (a lease that expired while the database was away, as for a
    duplicate), or by a kill that came before that attempt was durably completed.

    The handler records its end before the worker commits the outcome (batched, a few
    milliseconds later), so a SIGKILL in between runs a finished job again: at-least-once,
    as promised (docs/design.md). An end is excused that way only when its process was
    killed after writing it and before the next run started, and the database shows the
    attempt never completed: the rescuer took it back (`StoredJob.rescued`; the rescue and
    the finish are both fenced on the running attempt), or the next run is the same
    attempt (the killed claim never committed, so nothing counted it)."""
    ends: dict[str, list[Execution]] = defaultdict(list)
    starts: dict[tuple[str, int, int], float] = {}
    for e in executions:
        if e.event == "end":
            ends[e.job_id].append(e)
        else:
            starts.setdefault((e.job_id, e.attempt, e.owner), e.t)
    killed = {f.pid: f for f in faults if f.pid is not None}
    rescued = {job.job_id: job.rescued for job in stored}
    twice = []
    for job_id, runs in ends.items():
        taken_back = rescued.get(job_id, frozenset())
        for first, again in itertools.pairwise(runs):
            next_start = starts.get((job_id, again.attempt, again.owner), again.t)
            if not (
                _outage_explains(first, again, faults, lease)
                or _kill_explains(first, again, killed.get(first.owner), next_start, taken_back)
            ):
                twice.append(runs[0].index)
                break
    return twice


def _kill_explains(
    first: Execution,
    again: Execution,
    kill: Fault | None,
    next_start: float,
    rescued: frozenset[int],
) -> bool:
    """`first`'s process was killed after writing it and before the next run started
    (`next_start`), and that attempt never completed: the rescuer took it back, or the
    next run is the same attempt (the killed claim was never committed). "After writing
    it": before the process was seen gone (`Fault.gone`), not only before the signal was
    sent: a handler on the other core can write its end in between."""
    if kill is None:
        return False
    died = kill.start if kill.gone is None else kill.gone
    if not (first.t <= died and kill.start <= next_start):
        return False
    return again.attempt == first.attempt or first.attempt in rescued


def _outage_explains(
    first: Execution, again: Execution, faults: Sequence[Fault], lease: float
) -> bool:
    """A lease that expired while the database was away, as for a duplicate."""
    return any(
        f.kind in OUTAGES and f.start <= again.t and first.t <= f.end + lease for f in faults
    )


def worst(values: Iterable[float | None]) -> float | None:
    """The largest; None if any is None (a recovery that never happened)."""
    found = list(values)
    if any(v is None for v in found):
        return None
    numbers = [v for v in found if v is not None]
    return max(numbers) if numbers else None


@dataclass
class Row:
    """One line of the table, and whether it passes."""

    scenario: str
    db: str
    jobs: int = 0
    faults: str = ""
    lost: int = 0
    duplicates: int = 0
    unexplained: int = 0
    stuck: int = 0
    exits: list[str] = field(default_factory=list)
    slowest_answer: float | None = None  # seconds, during outages
    answer_bound: float | None = None
    recovery: float | None = None
    recovery_measured: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the scenario itself broke (not a verdict on Conveyor)
    # The limited scenario's own checks (0 elsewhere): keys seen running over their limit,
    # jobs that completed more than once with no outage to explain it, slots held at the end
    # by jobs that are not running.
    over_limit: int = 0
    twice: int = 0
    leaked_slots: int = 0
    # The workflow scenario's (0 elsewhere): workflows stored in part (steps or edges
    # missing, or steps whose workflow is not stored), workflows not completed at the end,
    # joins that started before one of their dependencies had ended.
    partial: int = 0
    unsettled: int = 0
    early_joins: int = 0

    def failures(self) -> list[str]:
        why = [f"error: {self.error}"] if self.error else []
        why += [f"{n} {what}" for n, what in self._counted() if n]
        if self.exits:
            why.append("exits: " + ", ".join(self.exits))
        if self.answer_bound is not None and (
            self.slowest_answer is None or self.slowest_answer > self.answer_bound
        ):
            why.append(f"slowest answer over {self.answer_bound:.1f} s")
        if self.recovery_measured and self.recovery is None:
            why.append("work never resumed")
        return why

    def _counted(self) -> list[tuple[int, str]]:
        """Each count that fails the row when it is not 0, with what it counts."""
        return [
            (self.lost, "lost"),
            (self.stuck, "stuck"),
            (self.unexplained, "duplicates no fault explains"),
            (self.over_limit, "keys ran over their limit"),
            (self.twice, "jobs completed more than once"),
            (self.leaked_slots, "slots leaked"),
            (self.partial, "workflows stored in part"),
            (self.unsettled, "workflows not completed"),
            (self.early_joins, "joins started before their dependencies ended"),
        ]

    @property
    def passed(self) -> bool:
        return not self.failures()

    def apply(self, counted: Tally, faults: Sequence[Fault]) -> None:
        self.jobs = counted.jobs
        self.lost = len(counted.lost) + counted.lost_events
        self.stuck = len(counted.stuck)
        self.duplicates = counted.duplicates
        self.unexplained = len(counted.unexplained)
        self.faults = describe_faults(faults)


def describe_faults(faults: Sequence[Fault]) -> str:
    counts: Mapping[str, int] = _count(f.kind for f in faults)
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def describe_each(faults: Sequence[Fault]) -> str:
    """One line per fault, kept beside the records so a failed run can be traced:
    `kind start end pid index gone` (`gone`: when a killed process was seen gone, the end
    of the window in which its records still count as written before the kill)."""
    return "".join(
        f"{f.kind} {f.start:.6f} {f.end:.6f} {f.pid} {f.index} "
        f"{'None' if f.gone is None else f'{f.gone:.6f}'}\n"
        for f in faults
    )


def _count(kinds: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return counts
