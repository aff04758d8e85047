"""The admission plan alone (store/admission.py): greedy in claim order, all limits or none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.store.admission import Bucket, Demand, plan

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def conc(job: str, name: str, key: str, n: int) -> Demand:
    return Demand(job, name, key, "concurrency", max_running=n)


def rate(job: str, name: str, key: str, limit: int, per_s: float) -> Demand:
    return Demand(job, name, key, "rate", rate_limit=limit, per_s=per_s)


def test_a_job_takes_every_limit_or_nothing_and_leaves_the_rest_for_later_jobs() -> None:
    demands = [
        conc("a", "global", "", 10), conc("a", "per", "x", 1),
        conc("b", "global", "", 10), conc("b", "per", "x", 1),
        conc("c", "global", "", 10), conc("c", "per", "y", 1),
    ]  # fmt: skip
    free = {("global", ""): [1, 2], ("per", "x"): [1], ("per", "y"): [1]}
    out = plan(["a", "b", "c"], demands, free, {}, NOW)
    assert out.admitted == ["a", "c"]
    assert sorted(out.holds) == sorted(
        [("global", "", 1, "a"), ("per", "x", 1, "a"), ("global", "", 2, "c"), ("per", "y", 1, "c")]
    )
    assert out.refused == {"per": 1}


def test_partial_admission_spends_no_token_of_a_job_refused_by_another_limit() -> None:
    demands = [
        rate("a", "r", "k", 1, 60), conc("a", "c", "k", 1),
        rate("b", "r", "k", 1, 60), conc("b", "c", "k", 1),
    ]  # fmt: skip
    out = plan(["a", "b"], demands, {("c", "k"): []}, {}, NOW)
    assert out.admitted == [] and out.buckets == {} and out.refused == {"c": 2}


def test_a_rate_refills_by_elapsed_time_and_says_when_its_next_token_comes() -> None:
    demands = [rate(j, "r", "k", 2, 1) for j in ("a", "b", "c")]
    drained = {("r", "k"): Bucket(0.0, NOW - timedelta(seconds=0.5))}  # refilled to 1 now
    out = plan(["a", "b", "c"], demands, {}, drained, NOW)
    assert out.admitted == ["a"] and out.buckets == {("r", "k"): 0.0}
    assert out.retry_in is not None and abs(out.retry_in - 0.5) < 1e-9
    assert out.refused == {"r": 2}


def test_a_limit_without_a_definition_admits_nothing() -> None:
    out = plan(["a"], [Demand("a", "unknown", "k", None)], {}, {}, NOW)
    assert out.admitted == [] and out.refused == {"unknown": 1}


def test_a_running_quota_without_a_cap_admits_without_a_slot() -> None:
    out = plan(["a"], [Demand("a", "quota.running", "alice", "concurrency")], {}, {}, NOW)
    assert out.admitted == ["a"] and out.holds == []
