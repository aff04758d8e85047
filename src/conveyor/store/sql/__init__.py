"""Named statements: each database's hand-written SQL, one file per database, read by name.

`postgres.sql` and `sqlite.sql` hold every hand-written statement of the queue as blocks
opened by `-- name: <name>`, so a reader sees one database's whole queue SQL in one place
(procrastinate's queries.sql). A driver asks for the names it runs when it is imported:
a name missing from the file, or a block no driver asks for, fails then, not at run time.

A condition several statements share is written once, as a block opened by
`-- fragment: <name>`, and placed in each statement by a line `-- include: <name>` (the
line is replaced by the fragment's text): a change to it is made once. A fragment may
include the fragments above it in the file.
"""

from __future__ import annotations

import re
from importlib.resources import files

from sqlalchemy import TextClause, bindparam, text

from conveyor.store.tables import jobs
from conveyor.store.types import UTCDateTime

_NAME = re.compile(r"^--\s*(name|fragment):\s*(\S+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^\s*--\s*include:\s*(\S+)\s*$")


class MissingStatement(LookupError):
    """A driver asked for a statement its SQL file does not name (or the file has extra)."""


def parse(source: str) -> dict[str, str]:
    """The statements of a SQL file by name; each block runs to the next `-- name:` or
    `-- fragment:` line, its `-- include:` lines replaced by their fragments. Whole comment
    lines are the reader's, not the database's: they are left out (a `:name` in a comment
    would read as a parameter)."""
    marks = list(_NAME.finditer(source))
    raw: dict[tuple[str, str], list[str]] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following is not None else len(source)
        kind, name = mark.group(1), mark.group(2)
        if (kind, name) in raw:
            raise MissingStatement(f"{kind} {name!r} is named twice")
        raw[(kind, name)] = source[mark.end() : end].splitlines()
    fragments: dict[str, str] = {}
    for (kind, name), lines in raw.items():  # in file order: a fragment may include those above
        if kind != "name":
            fragments[name] = _code(lines, fragments)
    blocks = {
        name: _code(lines, fragments) for (kind, name), lines in raw.items() if kind == "name"
    }
    used = {m.group(1) for lines in raw.values() for x in lines if (m := _INCLUDE.match(x))}
    if unused := fragments.keys() - used:
        raise MissingStatement(f"fragments never included: {sorted(unused)}")
    return blocks


def _code(lines: list[str], fragments: dict[str, str]) -> str:
    """A block's SQL: its include lines replaced, its comment lines left out."""
    out: list[str] = []
    for line in lines:
        if included := _INCLUDE.match(line):
            if included.group(1) not in fragments:
                raise MissingStatement(f"include of unknown fragment {included.group(1)!r}")
            out.append(fragments[included.group(1)])
        elif not line.lstrip().startswith("--"):
            out.append(line)
    return "\n".join(out).strip()


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
