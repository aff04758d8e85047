"""What the `conveyor` commands show: JSON input read from an option, jobs as a table or
JSON, a URL without its password, and a progress bar fed by a job's events. Shared by the
database-direct commands (processes, admin, jobs) and the client commands (client.py); it
imports nothing of the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class InputError(ValueError):
    """Input given on the command line that cannot be used; the message is for the user."""


LimitOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="NAME=KEY",
        help="Put the job under its type's submit limit NAME with KEY (repeat for more).",
    ),
]


def limit_pairs(values: list[str] | None) -> dict[str, str] | None:
    """`--limit name=key` options as {name: key} (None without any); the key may be empty
    ("name=": one key for every job) and may hold "=" itself."""
    if not values:
        return None
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, key = value.partition("=")
        if not sep or not name:
            raise InputError(f"--limit {value!r}: give NAME=KEY (KEY may be empty)")
        if name in pairs:
            raise InputError(f"--limit {name}: given twice")
        pairs[name] = key
    return pairs


def json_object(text: str, option: str = "--payload") -> dict[str, Any]:
    """A JSON object given inline or as `@file.json`."""
    try:
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        value = json.loads(text)
    except OSError as exc:
        raise InputError(f"{option}: cannot read {text[1:]}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} must be a JSON object")
    return value


def without_password(url: str) -> str:
    """A URL as it may be shown: any password in it replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def error_line(message: str) -> None:
    """The one red line a failed command prints (markup in the message is shown as is)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def print_json(value: Any) -> None:
    """JSON on stdout, one document per call, never wrapped or coloured."""
    out.file.write(json.dumps(value, default=str) + "\n")
    out.file.flush()


JOB_COLUMNS = ("id", "type", "queue", "state", "progress", "created")


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def jobs_table(jobs: Sequence[Mapping[str, Any]], title: str | None = None) -> Table:
    """`jobs` as JSON-ready mappings (the API's job shape)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)  # room for whole ids
    for column in JOB_COLUMNS:  # whole ids and states: they are what people copy and read
        keep = column in ("id", "state")
        table.add_column(column, no_wrap=keep, min_width=36 if column == "id" else None)
    for job in jobs:
        progress = job.get("progress") or {}
        created = str(job.get("created_at") or "")[5:16].replace("T", " ")  # MM-DD HH:MM
        table.add_row(
            job["id"], job["type"], job["queue"], job["state"],
            f"{progress.get('percent', 0)}%", created,
        )  # fmt: skip
    return table


def record_table(record: Mapping[str, Any], title: str | None = None) -> Table:
    """One object as a two-column table of its fields."""
    table = Table("field", "value", title=title, show_header=False)
    for name, value in record.items():
        table.add_row(name, _cell(value))
    return table


def rows_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Table:
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


class JobBar:
    """A progress bar on stderr for one job, moved by its events (stdout stays for the
    answer, so `--wait` output can be piped)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def show(self, state: str, percent: int | None = None, message: str | None = None) -> None:
        text = state if not message else f"{state}: {message}"
        fields: dict[str, Any] = {"description": escape(text)}
        if percent is not None:
            fields["completed"] = percent
        self._progress.update(self._task, **fields)

    def event(self, kind: str, state: str, data: Mapping[str, Any] | None) -> None:
        """One job event (type, the job's state after it, its data)."""
        data = data or {}
        if kind == "progress":
            self.show(state, int(data.get("percent", 0)), data.get("message"))
        elif kind == "completed":
            self.show(state, 100)
        else:
            self.show(state)


@contextmanager
def job_bar(job_id: str) -> Iterator[JobBar]:
    columns = (
        TextColumn(f"[bold]{escape(job_id[:13])}[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        yield JobBar(progress, progress.add_task("waiting", total=100))


def read_spec(path: Path) -> dict[str, Any]:
    """A workflow declaration from a JSON file (`workflows submit`, `schedules create
    --workflow`); InputError when it is not one."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read a workflow from {path}: {exc}") from None
    if not isinstance(body, dict):
        raise InputError(f"{path}: a workflow is a JSON object with `name` and `steps`")
    return body
