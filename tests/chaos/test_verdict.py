"""The total-queue check: records written by the suite's handlers, judged against a ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos.handlers import RECORD_DIR_ENV, record
from chaos.run import keep_run_dir
from chaos.verdict import (
    Execution,
    Fault,
    Row,
    StoredJob,
    Submission,
    completed_twice,
    describe_each,
    kill_recovery,
    most_running,
    read_executions,
    tally,
)

LEASE = 3.0


def sub(index: int, outcome: str = "acked", fault_job: bool = False) -> Submission:
    return Submission(index, outcome, f"j{index}", 0.0, 0.01, fault_job)


def run(event: str, index: int, attempt: int, owner: int, t: float) -> Execution:
    return Execution(event, index, f"j{index}", attempt, owner, t)


def ran(index: int, attempt: int, owner: int, start: float, end: float) -> list[Execution]:
    """One attempt's start and end."""
    return [run("start", index, attempt, owner, start), run("end", index, attempt, owner, end)]


def test_handlers_records_are_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RECORD_DIR_ENV, str(tmp_path))
    record("start", 7, "job-a", 1, 4242)
    record("end", 7, "job-a", 1, 4242)
    (tmp_path / "exec-1.log").write_text("start 1 torn")  # a torn line is skipped
    found = read_executions(tmp_path)
    assert [(e.event, e.index, e.job_id, e.attempt, e.owner) for e in found] == [
        ("start", 7, "job-a", 1, 4242),
        ("end", 7, "job-a", 1, 4242),
    ]
    assert found[0].t <= found[1].t


def test_completed_with_a_recorded_end_is_ok_else_lost_or_stuck() -> None:
    submissions = [sub(0), sub(1), sub(2), sub(3), sub(4), sub(5, "refused"), sub(6, "unknown")]
    stored = [
        StoredJob("j0", 0, "completed"),
        StoredJob("j1", 1, "failed"),  # dead-lettered: lost
        StoredJob("j2", 2, "completed"),  # completed, but no handler ever ended it: lost
        StoredJob("j3", 3, "queued"),  # stuck
        # j4 acknowledged but missing from the database: lost
        # j6's submission got no answer and never committed: nothing was promised
    ]
    executions = [run("start", 0, 1, 10, 1.0), run("end", 0, 1, 10, 2.0)]
    counted = tally(submissions, stored, executions, [], LEASE)
    assert (counted.jobs, counted.ok) == (5, 1)
    assert sorted(counted.lost) == [1, 2, 4]
    assert counted.stuck == [3]


def test_duplicates_are_explained_by_a_kill_an_outage_or_the_fault_job_only() -> None:
    submissions = [sub(i) for i in range(4)] + [sub(4, fault_job=True)]
    stored = [StoredJob(f"j{i}", i, "completed") for i in range(5)]
    executions = [
        run("start", 0, 1, 10, 1.0),  # on worker 10, killed at 1.5
        run("start", 0, 2, 11, 5.0),
        run("start", 1, 1, 11, 6.0),  # ran while the database was cut (7..9)
        run("start", 1, 2, 11, 12.0),
        run("start", 2, 1, 11, 20.0),  # a live worker, no fault: unexplained
        run("start", 2, 2, 11, 25.0),
        run("start", 3, 1, 11, 30.0),  # once: no duplicate
        run("start", 4, 1, 11, 30.0),  # the blocking job itself
        run("start", 4, 2, 11, 36.0),
    ] + [run("end", i, 2 if i != 3 else 1, 11, 40.0) for i in range(5)]
    faults = [Fault("kill-worker", 1.5, 1.5, pid=10), Fault("cut", 7.0, 9.0)]
    counted = tally(submissions, stored, executions, faults, LEASE)
    assert counted.duplicates == 4
    assert counted.unexplained == [2]
    assert counted.lost == [] and counted.stuck == []


def test_kill_recovery_is_until_the_last_held_job_started_again() -> None:
    executions = [
        run("start", 0, 1, 10, 1.0),
        run("start", 1, 1, 10, 1.1),
        run("end", 1, 1, 10, 1.2),  # finished before the kill: not held
        run("start", 2, 1, 10, 1.3),
        run("start", 0, 2, 11, 4.0),
        run("start", 2, 2, 11, 6.5),
    ]
    kill = Fault("kill-worker", 2.0, 2.0, pid=10)
    assert kill_recovery(executions, kill) == pytest.approx(4.5)
    assert kill_recovery(executions[:-1], kill) is None  # job 2 never ran again


def test_most_running_per_key_comes_from_the_intervals_and_a_kill_ends_a_run() -> None:
    """Keys by index parity. Key "even": 0 and 2 overlap (2), 4 starts when 0 ends (an end
    comes first at one instant). Key "odd": 1 runs on worker 10, killed at 3.0, so 1 ran
    until then; 3 and 5 start at 2.5 (3 running); 7 has no end and no kill: until `until`."""
    executions = [
        run("start", 0, 1, 20, 1.0), run("start", 2, 1, 20, 1.5), run("end", 0, 1, 20, 2.0),
        run("start", 4, 1, 20, 2.0), run("end", 2, 1, 20, 2.2), run("end", 4, 1, 20, 3.0),
        run("start", 1, 1, 10, 1.0), run("start", 3, 1, 20, 2.5), run("start", 5, 1, 20, 2.5),
        run("end", 3, 1, 20, 2.6), run("end", 5, 1, 20, 2.6), run("start", 7, 1, 20, 4.0),
        run("start", 9, 1, 20, 9.0),
    ]  # fmt: skip
    kill = Fault("kill-worker", 3.0, 3.0, pid=10)
    most = most_running(executions, [kill], lambda i: "odd" if i % 2 else "even", until=10.0)
    assert most == {"even": 2, "odd": 3}
    without_kill = most_running(executions, [], lambda i: "odd" if i % 2 else "even", 10.0)
    assert without_kill["odd"] == 3  # 1 runs on to the end: 1, 7 and 9 overlap too


def test_a_job_completed_twice_is_reported_unless_an_outage_explains_it() -> None:
    executions = [
        run("start", 0, 1, 10, 1.0), run("end", 0, 1, 10, 1.5),
        run("start", 0, 2, 11, 2.0), run("end", 0, 2, 11, 2.5),
        run("start", 1, 1, 10, 1.0), run("end", 1, 1, 10, 1.2),
    ]  # fmt: skip
    assert completed_twice(executions, [], LEASE) == [0]
    outage = Fault("restart", 1.6, 1.9)
    assert completed_twice(executions, [outage], LEASE) == []


def test_a_second_end_is_excused_only_after_a_kill_before_the_completion_was_durable() -> None:
    """Worker 10 ends attempt 1 at 1.5 and is SIGKILLed at 1.51, before its batched
    completion commits: the rescuer takes attempt 1 back, attempt 2 runs and ends again.
    That is at-least-once; every other second end is still counted."""
    executions = ran(0, 1, 10, 1.0, 1.5) + ran(0, 2, 11, 5.0, 5.5)
    kill = Fault("kill-worker", 1.51, 1.51, pid=10)
    rescued = [StoredJob("j0", 0, "completed", rescued=frozenset({1}))]
    assert completed_twice(executions, [kill], LEASE, rescued) == []
    # The database never took attempt 1 back: its completion was durable, yet it ran again.
    durable = [StoredJob("j0", 0, "completed")]
    assert completed_twice(executions, [kill], LEASE, durable) == [0]
    # No kill of the process that ended it first (a live worker lost it), or another one.
    other = Fault("kill-worker", 1.51, 1.51, pid=12)
    assert completed_twice(executions, [], LEASE, rescued) == [0]
    assert completed_twice(executions, [other], LEASE, rescued) == [0]
    # Killed before that end was written (a recycled pid), or after the next run started.
    early = Fault("kill-worker", 1.4, 1.4, pid=10)
    assert completed_twice(executions, [early], LEASE, rescued) == [0]
    late = Fault("kill-worker", 5.1, 5.1, pid=10)
    assert completed_twice(executions, [late], LEASE, rescued) == [0]


def test_an_end_written_between_the_kill_signal_and_the_death_is_excused() -> None:
    """The suite notes the time, then sends SIGKILL; a handler on the other core wrote its
    end a moment after that time, before the process died (seen gone at 1.53), and the
    rescuer took the attempt back: at-least-once, not a second completion (a chaos run
    reported one so: `limited` on SQLite). An end after the process was seen gone is
    still counted (another process's pid, reused)."""
    executions = ran(0, 1, 10, 1.0, 1.5) + ran(0, 2, 11, 5.0, 5.5)
    rescued = [StoredJob("j0", 0, "completed", rescued=frozenset({1}))]
    kill = Fault("kill-worker", 1.49, 1.49, pid=10, gone=1.53)
    assert completed_twice(executions, [kill], LEASE, rescued) == []
    dead_before = Fault("kill-worker", 1.48, 1.48, pid=10, gone=1.49)
    assert completed_twice(executions, [dead_before], LEASE, rescued) == [0]


def test_the_same_attempt_ending_twice_is_excused_only_when_its_claim_died_uncommitted() -> None:
    """Started as soon as its claim returned, the job ended while the claim's COMMIT was
    on its way, and the kill rolled the claim back: the next claim counts attempt 1
    again. Two claims of one attempt overlapping in time are a bug, kill or no kill."""
    executions = ran(0, 1, 10, 1.0, 1.05) + ran(0, 1, 11, 1.2, 1.25)
    stored = [StoredJob("j0", 0, "completed")]
    kill = Fault("kill-worker", 1.1, 1.1, pid=10)
    assert completed_twice(executions, [kill], LEASE, stored) == []
    assert completed_twice(executions, [], LEASE, stored) == [0]
    overlapping = Fault("kill-worker", 1.22, 1.22, pid=10)  # after the second claim began
    assert completed_twice(executions, [overlapping], LEASE, stored) == [0]


def test_every_earlier_end_must_be_excused() -> None:
    executions = ran(0, 1, 10, 1.0, 1.5) + ran(0, 2, 11, 5.0, 5.5) + ran(0, 3, 12, 9.0, 9.5)
    kills = [Fault("kill-worker", 1.51, 1.51, pid=10), Fault("kill-worker", 5.51, 5.51, pid=11)]
    both = [StoredJob("j0", 0, "completed", rescued=frozenset({1, 2}))]
    assert completed_twice(executions, kills, LEASE, both) == []
    assert completed_twice(executions, kills[:1], LEASE, both) == [0]
    first_only = [StoredJob("j0", 0, "completed", rescued=frozenset({1}))]
    assert completed_twice(executions, kills, LEASE, first_only) == [0]


def test_the_limited_checks_fail_a_row() -> None:
    row = Row("limited", "sqlite", over_limit=1, twice=2, leaked_slots=3)
    assert row.failures() == [
        "1 keys ran over their limit",
        "2 jobs completed more than once",
        "3 slots leaked",
    ]
    assert Row("limited", "sqlite").passed


def test_a_failed_or_unfinished_run_keeps_its_directory() -> None:
    """The evidence of a failure (records, faults, logs) stays without `--keep`: a chaos
    run reported a job completed twice and its records were gone."""
    ok, failed = Row("limited", "sqlite"), Row("limited", "sqlite", twice=1)
    assert not keep_run_dir(False, [ok, ok], 2)
    assert keep_run_dir(True, [ok, ok], 2)
    assert keep_run_dir(False, [ok, failed], 2)
    assert keep_run_dir(False, [ok], 2)  # a scenario broke off the run


def test_faults_txt_gives_when_a_killed_process_was_seen_gone() -> None:
    """The verdict excuses an end written up to that moment: without it in faults.txt a
    duplicate could not be traced to its kill by hand."""
    kill = Fault("kill-worker", 1.49, 1.49, pid=10, gone=1.53)
    cut = Fault("cut", 2.0, 12.0)
    assert describe_each([kill, cut]).splitlines() == [
        "kill-worker 1.490000 1.490000 10 None 1.530000",
        "cut 2.000000 12.000000 None None None",
    ]
