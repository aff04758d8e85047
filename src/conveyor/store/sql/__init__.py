"""Named statements: each database's hand-written SQL, one file per database, read by name.

`postgres.sql` and `sqlite.sql` hold every hand-written statement of the queue as blocks
opened by `-- name: <name>`, so a reader sees one database's whole queue SQL in one place
(procrastinate's queries.sql). A driver asks for the names it runs when it is imported:
a name missing from the file, or a block no driver asks for, fails then, not at run time.
"""

from __future__ import annotations

import re
from importlib.resources import files

from sqlalchemy import TextClause, bindparam, text

from conveyor.store.tables import jobs
from conveyor.store.types import UTCDateTime

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


class MissingStatement(LookupError):
    """A driver asked for a statement its SQL file does not name (or the file has extra)."""


def parse(source: str) -> dict[str, str]:
    """The blocks of a SQL file by name; each block runs to the next `-- name:` line. Whole
    comment lines are the reader's, not the database's: they are left out (a `:name` in a
    comment would read as a parameter)."""
    marks = list(_NAME.finditer(source))
    blocks: dict[str, str] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following is not None else len(source)
        name = mark.group(1)
        if name in blocks:
            raise MissingStatement(f"statement {name!r} is named twice")
        lines = source[mark.end() : end].splitlines()
        blocks[name] = "\n".join(x for x in lines if not x.lstrip().startswith("--")).strip()
    return blocks


def load(dialect: str, names: frozenset[str]) -> dict[str, str]:
    """The statements `names` of `<dialect>.sql`, exactly those: no more, no fewer."""
    blocks = parse(files(__package__).joinpath(f"{dialect}.sql").read_text(encoding="utf-8"))
    missing, unused = names - blocks.keys(), blocks.keys() - names
    if missing or unused:
        raise MissingStatement(
            f"{dialect}.sql: missing {sorted(missing)}, not used {sorted(unused)}"
        )
    return blocks


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


def typed(sql: str, *, times: tuple[str, ...] = (), columns: tuple[str, ...] = ()) -> TextClause:
    """`text(sql)` whose time parameters convert like UTCDateTime and whose rows decode JSON."""
    clause = text(sql)
    if times:
        clause = clause.bindparams(*(bindparam(name, type_=UTCDateTime) for name in times))
    if columns:
        return clause.columns(*(jobs.c[name] for name in columns))  # type: ignore[return-value]
    return clause
