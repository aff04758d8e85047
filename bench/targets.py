"""The figures of issue #12's "Targets" table, computed from one run's results."""

from __future__ import annotations

from collections.abc import Mapping

from bench.durable import unrecorded_range
from bench.http_submit import HttpFigures
from bench.measure import SystemResult
from bench.pgbench_limit import PgbenchFigures
from bench.soak import SoakFigures

CONCURRENCY = 64  # per worker process (bench/conveyor_systems.py)


def _durable(result: SystemResult | None) -> float | None:
    if result is None or result.drain is None or result.drain.durable is None:
        return None
    return result.drain.durable.jobs_per_s


def _bound(result: SystemResult | None) -> float | None:
    """A drain not all durable when it timed out: its rate is below this."""
    if result is None or result.drain is None or result.drain.durable is None:
        return None
    return result.drain.durable.below_jobs_per_s


def _ratio(a: SystemResult | None, b: SystemResult | None) -> str:
    """a's durable rate / b's; '<' or '>' when one of them only has a bound."""
    x, y = _durable(a), _durable(b)
    if x and y:
        return f"{x / y:.2f}x ({x:,.0f} vs {y:,.0f})"
    if y and _bound(a):
        return f"< {(_bound(a) or 0) / y:.2f}x (< {_bound(a):,.0f} vs {y:,.0f})"
    if x and _bound(b):
        return f"> {x / (_bound(b) or 1):.2f}x ({x:,.0f} vs < {_bound(b):,.0f})"
    return "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _idle_rows(
    store: str, result: SystemResult | None, goal: str, tag: str
) -> list[tuple[str, str, str]]:
    """The idle latency from the enqueue's call (the goal's figure), and from its return
    (the wake-up path alone: bench/measure.py `latency`)."""
    if result is None or result.latency is None:
        return []
    lat = result.latency
    return [
        (f"idle p50 / p99, {store}{tag}", f"{_ms(lat.p50_ms)} / {_ms(lat.p99_ms)} ms", goal),
        (
            f"  from the submit's return (wake-up to start), {store}{tag}",
            f"{_ms(lat.accepted_p50_ms)} / {_ms(lat.accepted_p99_ms)} ms",
            "-",
        ),
    ]


def rows(
    results: list[SystemResult],
    suffix: str,
    http: list[HttpFigures],
    pgbench: PgbenchFigures | None,
    soak: SoakFigures | None,
) -> list[tuple[str, str, str]]:
    """(figure, measured, goal) for the Conveyor systems named ``conveyor-*{suffix}``."""
    by_name = {r.name: r for r in results}
    pg, lite = by_name.get(f"conveyor-postgres{suffix}"), by_name.get(f"conveyor-sqlite{suffix}")
    peers = [r for r in results if not r.name.startswith("conveyor-") and _durable(r)]
    fastest = max(peers, key=lambda r: _durable(r) or 0.0, default=None)
    tag = f" {suffix}" if suffix else ""
    out: list[tuple[str, str, str]] = []
    if fastest is not None:
        out.append(
            (
                f"PG durable drain vs the fastest peer's ({fastest.label}){tag}",
                _ratio(pg, fastest),
                ">= 2x",
            )
        )
    out.append(
        (
            f"PG durable drain vs Procrastinate{tag}",
            _ratio(pg, by_name.get("procrastinate")),
            ">= 15x",
        )
    )
    out.append(
        (
            f"SQLite durable drain vs Huey + SQLite{tag}",
            _ratio(lite, by_name.get("huey-sqlite")),
            ">= 2x",
        )
    )
    for result in (pg, lite):
        if result and result.drain and result.drain.durable:
            out.append(
                (
                    f"executed-but-unrecorded peak, {result.label}",
                    unrecorded_range(result.drain.durable),
                    f"<= {2 * CONCURRENCY}",
                )
            )
    out += _idle_rows("PG", pg, "<= 2 / <= 10 ms", tag)
    out += _idle_rows("SQLite", lite, "<= 5 ms p50", tag)
    for f in http:
        if f.store != "postgres":
            continue
        if f.scenario == "single, JWT":
            out.append(
                (
                    f"HTTP single submits/s, PG, 32 clients{tag}",
                    f"{f.requests_per_s:,.0f}",
                    ">= 1,500",
                )
            )
            out.append(
                (
                    f"server CPU per single submit{tag}",
                    f"{f.server_cpu_ms_per_request:.2f} ms",
                    "<= 0.6 ms",
                )
            )
        elif f.is_batch():
            out.append(
                (
                    f"HTTP batch jobs/s (500 per request), PG{tag}",
                    f"{f.jobs_per_s:,.0f}",
                    ">= 20,000",
                )
            )
    if pg and pg.enqueue_single and pgbench:
        ratio = pg.enqueue_single.jobs_per_s / pgbench.tps if pgbench.tps else 0.0
        out.append(
            (
                f"sequential enqueue / pgbench single-insert tps{tag}",
                f"{ratio:.2f} ({pg.enqueue_single.jobs_per_s:,.0f} / {pgbench.tps:,.0f})",
                ">= 0.77 (within 1.3x)",
            )
        )
    out += _relaxed_rows(by_name, suffix, pgbench, tag)
    if soak is not None and soak.rss_total_mib:
        marks = " -> ".join(f"{v:.1f}" for v in soak.rss_total_mib.values())
        out.append((f"worker RSS over {soak.n:,} jobs (sum of 2)", f"{marks} MiB", "flat"))
    return out


def _relaxed_rows(
    by_name: Mapping[str, SystemResult], suffix: str, pgbench: PgbenchFigures | None, tag: str
) -> list[tuple[str, str, str]]:
    """The opt-in relaxed submits (`conveyor-postgres-relaxed`: CONVEYOR_SUBMIT_SYNCHRONOUS_
    COMMIT=off) beside pgbench's durable insert and Dramatiq's enqueue, as the issue asks."""
    relaxed = by_name.get(f"conveyor-postgres-relaxed{suffix}")
    if relaxed is None or relaxed.enqueue_single is None:
        return []
    rate = relaxed.enqueue_single.jobs_per_s
    out = []
    if pgbench and pgbench.tps:
        out.append(
            (
                f"sequential enqueue / pgbench, relaxed submits (opt-in){tag}",
                f"{rate / pgbench.tps:.2f} ({rate:,.0f} / {pgbench.tps:,.0f})",
                "measured",
            )
        )
    dramatiq = by_name.get("dramatiq-rabbitmq")
    if dramatiq is not None and dramatiq.enqueue_single is not None:
        out.append(
            (
                f"sequential enqueue, relaxed submits vs Dramatiq + RabbitMQ{tag}",
                f"{rate:,.0f} vs {dramatiq.enqueue_single.jobs_per_s:,.0f} jobs/s",
                "measured",
            )
        )
    out += _idle_rows("PG relaxed submits", relaxed, "-", tag)
    return out
