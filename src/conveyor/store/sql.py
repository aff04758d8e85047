"""Typed raw statements: text SQL whose parameters and result columns carry column types."""

from __future__ import annotations

from sqlalchemy import TextClause, bindparam, text

from conveyor.store.tables import jobs
from conveyor.store.types import UTCDateTime

CLAIM_COLUMNS = (
    "id",
    "type",
    "queue",
    "payload",
    "attempt",
    "max_attempts",
    "timeout_s",
    "priority",
    "owner_id",
    "idempotency_key",
    "run_at",
)
RETURNING_CLAIM = ", ".join(f"jobs.{name}" for name in CLAIM_COLUMNS)


def typed(sql: str, *, times: tuple[str, ...] = (), columns: tuple[str, ...] = ()) -> TextClause:
    """`text(sql)` whose time parameters convert like UTCDateTime and whose rows decode JSON."""
    clause = text(sql)
    if times:
        clause = clause.bindparams(*(bindparam(name, type_=UTCDateTime) for name in times))
    if columns:
        return clause.columns(*(jobs.c[name] for name in columns))  # type: ignore[return-value]
    return clause
