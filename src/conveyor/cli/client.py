"""`conveyor submit|jobs|schedules`: the command line as a client of a server.

These commands talk to a Conveyor server over its REST API with `conveyor.client`, unlike the
database-direct commands (processes, admin, jobs), and import nothing of the server. They
connect with the saved login or an API key (login.py). Every failure is one red line on
stderr and exit code 2; `--wait` and `watch` exit 1 when the job did not complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.login import ApiKey, Url, connected
from conveyor.cli.output import (
    InputError,
    LimitOption,
    job_bar,
    jobs_table,
    json_object,
    limit_pairs,
    out,
    print_json,
    read_spec,
    record_table,
    rows_table,
)
from conveyor.domain.states import JobState

if TYPE_CHECKING:
    from pydantic import BaseModel

    from conveyor.client import Client, Job, JobEvent

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
JobId = Annotated[str, typer.Argument(metavar="ID", help="The job's id.")]
ObjectId = Annotated[str, typer.Argument(metavar="ID")]
Payload = Annotated[str, typer.Option(help="JSON object, or @file.json.")]

jobs_app = typer.Typer(name="job", help="Jobs on the server: list, get, cancel, retry, watch.")
schedules_app = typer.Typer(name="schedule", help="Cron schedules on the server.")


# ---- jobs ----------------------------------------------------------------------------------------
def _show(found: BaseModel, as_json: bool, title: str) -> None:
    """One object the server answered: JSON, or a table of its fields."""
    if as_json:
        print_json(found.model_dump(mode="json"))
    else:
        out.print(record_table(found.model_dump(mode="json"), title=title))


def _wait_with_bar(client: Client, job: Job, timeout: float | None) -> Job:
    with job_bar(job.id) as bar:
        return client.wait(
            job.id, timeout, on_event=lambda e: bar.event(e.type, e.job.state.value, e.data)
        )


def _exit_for(job: Job) -> None:
    if job.state is not JobState.COMPLETED:
        raise typer.Exit(1)


def submit(
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="The job type.")],
    payload: Payload = "{}",
    queue: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int | None, typer.Option()] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds from now.")] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt.")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeat for more).")] = None,
    limit: LimitOption = None,
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar.")] = False,
    wait_timeout: Annotated[float | None, typer.Option(help="Give up waiting after s.")] = None,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a job to the server; with --wait, exit 0 once it completed, 1 otherwise."""
    with connected(url, api_key) as client:
        job = client.submit(
            job_type, json_object(payload), queue=queue, priority=priority, delay=delay,
            max_attempts=max_attempts, timeout=timeout, idempotency_key=idempotency_key,
            tags=tag or [], limits=limit_pairs(limit),
        )  # fmt: skip
        duplicate = job.duplicate
        if wait:
            job = _wait_with_bar(client, job, wait_timeout)
        title = f"job {job.id}" + (" (a duplicate: the live unique job)" if duplicate else "")
        _show(job.model_copy(update={"duplicate": duplicate}), as_json, title)
    if wait:
        _exit_for(job)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[list[str] | None, typer.Option(help="A state (repeat for more).")] = None,
    type: Annotated[str | None, typer.Option(help="A job type.")] = None,
    queue: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 50,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Your jobs, newest first."""
    with connected(url, api_key) as client:
        found = client.list(
            state=state, type=type, queue=queue, tag=tag, limit=limit, page_size=min(limit, 200)
        )
        jobs = [job.model_dump(mode="json") for job in found]
    if as_json:
        print_json(jobs)
    else:
        out.print(jobs_table(jobs, title=f"{len(jobs)} job(s)"))


def _by_id(group: typer.Typer, name: str, act: Callable[[Client, str], Any], doc: str) -> None:
    """A command that does one thing to one object (`jobs cancel ID`) and shows the answer."""

    def command(
        object_id: ObjectId,
        as_json: AsJson = False,
        url: Url = None,
        api_key: ApiKey = None,
    ) -> None:
        with connected(url, api_key) as client:
            found = act(client, object_id)
        _show(found, as_json, f"{group.info.name or ''} {object_id}".strip())

    command.__doc__ = doc
    group.command(name)(command)


_by_id(jobs_app, "get", lambda c, i: c.get(i), "One job, with its payload, result and errors.")
_by_id(jobs_app, "cancel", lambda c, i: c.cancel(i), "Cancel a job that has not finished.")
_by_id(jobs_app, "retry", lambda c, i: c.retry(i), "Queue a failed or cancelled job again.")


def _event_line(event: JobEvent) -> str:
    head = f"{event.at:%H:%M:%S} {event.type:<9} {event.job.state.value:<9} #{event.job.attempt}"
    if (progress := event.progress) is not None:
        return f"{head} {progress.percent}% {progress.message or ''}".rstrip()
    return f"{head} {json.dumps(event.data)}" if event.data else head


@jobs_app.command("watch")
def jobs_watch(
    job_id: JobId,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many s.")] = None,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Print the job's events from the first, live, until it finishes (JSON lines with
    --json); exit 0 if it completed, 1 otherwise."""

    def show(event: JobEvent) -> None:
        if as_json:
            print_json(event.model_dump(mode="json"))
        else:
            out.print(_event_line(event), highlight=False, markup=False)

    with connected(url, api_key) as client:
        after: str | None = None
        while True:  # again if the job was retried after the terminal event seen
            for event in client.watch(job_id, timeout, after=after):
                show(event)
                after = event.event_id
            if (job := client.get(job_id)).finished:
                break
    _exit_for(job)


# ---- limits -----------------------------------------------------------------------------------
LIMIT_COLUMNS = ("name", "key", "running", "ready", "max_running", "tokens", "capacity")


def limits(
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
    size: Annotated[int, typer.Option("--limit", help="Keys at most.")] = 500,
) -> None:
    """Flow-control limits per key: jobs running and ready, rate tokens now (your own jobs'
    keys; every key for an administrator)."""
    rows: list[dict[str, Any]] = []
    with connected(url, api_key) as client:
        cursor: str | None = None
        while len(rows) < size:
            page = client.limits(cursor=cursor, limit=min(500, size - len(rows)))
            rows += [k.model_dump(mode="json") for k in page.keys]
            cursor = page.next_cursor
            if cursor is None:
                break
    if as_json:
        print_json(rows)
    else:
        out.print(rows_table(rows, LIMIT_COLUMNS))


# ---- schedules --------------------------------------------------------------------------------
SCHEDULE_COLUMNS = ("id", "name", "cron", "timezone", "type", "paused", "next_fire_at")


@schedules_app.command("list")
def schedules_list(as_json: AsJson = False, url: Url = None, api_key: ApiKey = None) -> None:
    """Your schedules."""
    with connected(url, api_key) as client:
        rows = [s.model_dump(mode="json") for s in client.list_schedules()]
    if as_json:
        print_json(rows)
    else:
        out.print(rows_table(rows, SCHEDULE_COLUMNS))


@schedules_app.command("create")
def schedules_create(
    name: Annotated[str, typer.Argument(help="A name for the schedule.")],
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '*/5 * * * *'.")],
    job_type: Annotated[
        str | None, typer.Option("--type", help="The job type it fires (or --workflow).")
    ] = None,
    workflow: Annotated[
        Path | None,
        typer.Option(help="A workflow template (the JSON of `workflows submit`) it fires."),
    ] = None,
    payload: Payload = "{}",
    timezone: Annotated[str, typer.Option(help="The cron's time zone.")] = "UTC",
    queue: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int, typer.Option()] = 0,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
    limit: LimitOption = None,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Fire a job, or a workflow (--workflow FILE), on a cron schedule."""
    with connected(url, api_key) as client:
        if (job_type is None) == (workflow is None):
            raise InputError("give --type (a job) or --workflow (a workflow file), not both")
        if job_type is None:
            assert workflow is not None  # one of the two, checked above
            if limit:
                raise InputError("--limit is for a job schedule (a workflow's are its steps')")
            schedule = client.create_workflow_schedule(
                name, cron, read_spec(workflow), timezone=timezone, paused=paused
            )
            _show(schedule, as_json, f"schedule {schedule.id}")
            return
        schedule = client.create_schedule(
            name, cron, job_type, json_object(payload), timezone=timezone, queue=queue,
            priority=priority, paused=paused, limits=limit_pairs(limit),
        )  # fmt: skip
        _show(schedule, as_json, f"schedule {schedule.id}")


@schedules_app.command("update")
def schedules_update(
    schedule: Annotated[str, typer.Argument(help="The schedule's name or id.")],
    cron: Annotated[str | None, typer.Option(help="A new cron expression.")] = None,
    timezone: Annotated[str | None, typer.Option(help="A new time zone.")] = None,
    workflow: Annotated[
        Path | None,
        typer.Option(help="A workflow schedule's new template (the JSON of `workflows submit`)."),
    ] = None,
    payload: Annotated[
        str | None, typer.Option(help="A job schedule's new payload (a JSON object).")
    ] = None,
    limit: LimitOption = None,
    no_limits: Annotated[
        bool, typer.Option("--no-limits", help="A job schedule's fires under no submit limit.")
    ] = False,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Change a schedule: its cron, time zone, a workflow schedule's template (checked as
    at create: a bad one changes nothing), a job schedule's payload or limits."""
    with connected(url, api_key) as client:
        changes: dict[str, Any] = {"cron": cron, "timezone": timezone}
        if workflow is not None:
            changes["workflow"] = read_spec(workflow)
        if payload is not None:
            changes["payload"] = json_object(payload)
        if limit and no_limits:
            raise InputError("give --limit or --no-limits, not both")
        if limit or no_limits:
            changes["limits"] = limit_pairs(limit)
        changes = {k: v for k, v in changes.items() if v is not None or k == "limits"}
        if not changes:
            raise InputError("nothing to change: give --cron, --timezone, --workflow, ...")
        found = [s for s in client.list_schedules() if schedule in (s.id, s.name)]
        if not found:
            raise InputError(f"no schedule named {schedule!r}")
        changed = client.update_schedule(found[0].id, **changes)
    _show(changed, as_json, f"schedule {changed.id}")


_by_id(schedules_app, "pause", lambda c, i: c.pause_schedule(i), "Stop firing until resumed.")
_by_id(
    schedules_app,
    "resume",
    lambda c, i: c.resume_schedule(i),
    "Fire again from the next cron time.",
)


@schedules_app.command("delete")
def schedules_delete(
    schedule_id: ObjectId,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Delete a schedule (the jobs it fired stay)."""
    with connected(url, api_key) as client:
        client.delete_schedule(schedule_id)
    out.print(f"deleted schedule {schedule_id}", highlight=False)
