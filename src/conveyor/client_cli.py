"""`conveyor login|logout|submit|jobs|schedules`: the command line as a client of a server.

These commands talk to a Conveyor server over its REST API with `conveyor.client`, unlike the
database-direct commands in cli.py. Credentials come from `--api-key` / `CONVEYOR_API_KEY`, or
from `conveyor login`, which keeps the server URL and the login's tokens in a file only the
user can read (`CONVEYOR_CLIENT_CONFIG`, else the user's config directory). Every failure is
one red line on stderr and exit code 2; `--wait` and `watch` exit 1 when the job did not
complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel

from conveyor.cli_output import (
    InputError,
    error_line,
    job_bar,
    jobs_table,
    json_object,
    out,
    print_json,
    record_table,
    rows_table,
)
from conveyor.client import (
    Client,
    ConnectionFailed,
    ConveyorAPIError,
    ConveyorClientError,
    Job,
    JobEvent,
    Tokens,
    Unauthorized,
    ValidationFailed,
)
from conveyor.domain.states import JobState

CONFIG_ENV = "CONVEYOR_CLIENT_CONFIG"
DEFAULT_URL = "http://127.0.0.1:8080"

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="CONVEYOR_URL", help="The server (default: the logged-in one)."),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="CONVEYOR_API_KEY", help="An API key instead of a login."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
JobId = Annotated[str, typer.Argument(metavar="ID", help="The job's id.")]
ObjectId = Annotated[str, typer.Argument(metavar="ID")]
Payload = Annotated[str, typer.Option(help="JSON object, or @file.json.")]

jobs_app = typer.Typer(name="job", help="Jobs on the server: list, get, cancel, retry, watch.")
schedules_app = typer.Typer(name="schedule", help="Cron schedules on the server.")


def register(app: typer.Typer) -> None:
    """Add the client commands to the `conveyor` command."""
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("submit")(submit)
    app.add_typer(jobs_app, name="jobs", no_args_is_help=True)
    app.add_typer(schedules_app, name="schedules", no_args_is_help=True)


# ---- the stored login --------------------------------------------------------------------------
@dataclass
class SavedLogin:
    url: str
    email: str
    access_token: str
    refresh_token: str


def config_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(typer.get_app_dir("conveyor")) / "login.json"


def load_login() -> SavedLogin | None:
    path = config_path()
    try:
        return SavedLogin(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        _fail(f"the login file {path} is not readable: log in again: conveyor login")


def save_login(login: SavedLogin) -> Path:
    """Written whole (a temporary file renamed over the old one), readable by the user only:
    the directory 0700, the file 0600 from the moment it exists."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent.name == "conveyor":  # our own directory: tighten it even if it existed
        path.parent.chmod(0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".login-")  # mode 0600
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(login), handle)
    os.replace(temporary, path)
    return path


def _saver(login: SavedLogin) -> Any:
    """Keep each rotated token pair: the old refresh token stops working once it is used."""

    def save(tokens: Tokens) -> None:
        login.access_token, login.refresh_token = tokens.access_token, tokens.refresh_token
        save_login(login)

    return save


# ---- connecting, and saying what went wrong --------------------------------------------------
def _fail(message: str, code: int = 2) -> NoReturn:
    error_line(message)
    raise typer.Exit(code)


@dataclass
class Target:
    url: str
    credentials: str  # "key", "login" or "none": what a 401 means depends on it

    def explain(self, exc: ConveyorClientError) -> str:
        if isinstance(exc, ConnectionFailed):
            return f"cannot reach {self.url}: is the server running?"
        if isinstance(exc, Unauthorized):
            return {
                "key": f"the API key was refused: {exc.message}",
                "login": "log in again: conveyor login",
                "password": "wrong e-mail or password",
            }.get(self.credentials, "not logged in: run conveyor login, or set CONVEYOR_API_KEY")
        if isinstance(exc, ValidationFailed):
            return str(exc)
        if isinstance(exc, ConveyorAPIError):
            return f"{exc.message} ({exc.code})"
        return str(exc)


def _client(url: str | None, api_key: str | None) -> tuple[Client, Target]:
    saved = load_login()
    base = (url or (saved.url if saved else DEFAULT_URL)).rstrip("/")
    if api_key:
        return Client(base, api_key=api_key), Target(base, "key")
    if saved is not None and saved.url == base:
        client = Client(
            base,
            token=saved.access_token,
            refresh_token=saved.refresh_token,
            on_tokens=_saver(saved),
        )
        return client, Target(base, "login")
    return Client(base), Target(base, "none")


@contextlib.contextmanager
def connected(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client for the command, and one clear line instead of any traceback."""
    client, target = _client(url, api_key)
    try:
        with client:
            yield client
    except InputError as exc:
        _fail(str(exc))
    except ConveyorClientError as exc:
        _fail(target.explain(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# ---- login -------------------------------------------------------------------------------------
def login(
    url: Url = None,
    email: Annotated[str | None, typer.Option(help="Prompted for if not given.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Log in to a server; the URL and the login are saved for the other commands."""
    saved = load_login()
    base = (url or (saved.url if saved else DEFAULT_URL)).rstrip("/")
    email = email or typer.prompt("E-mail")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    target = Target(base, "password")
    try:
        with Client(base) as client:
            tokens = client.login(email, password)
    except ConveyorClientError as exc:
        _fail(target.explain(exc))
    path = save_login(SavedLogin(base, email, tokens.access_token, tokens.refresh_token))
    out.print(f"logged in to {base} as {email} (saved in {path})", highlight=False)


def logout() -> None:
    """End the saved login, on the server too when it can be reached."""
    saved = load_login()
    if saved is None:
        out.print("not logged in")
        return
    client = Client(saved.url, token=saved.access_token, refresh_token=saved.refresh_token)
    with client, contextlib.suppress(ConveyorClientError):
        client.logout()
    config_path().unlink(missing_ok=True)
    out.print(f"logged out of {saved.url}", highlight=False)


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
            tags=tag or [],
        )  # fmt: skip
        if wait:
            job = _wait_with_bar(client, job, wait_timeout)
        _show(job, as_json, f"job {job.id}")
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


_by_id(jobs_app, "get", Client.get, "One job, with its payload, result and errors.")
_by_id(jobs_app, "cancel", Client.cancel, "Cancel a job that has not finished.")
_by_id(jobs_app, "retry", Client.retry, "Queue a failed or cancelled job again.")


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
    job_type: Annotated[str, typer.Option("--type", help="The job type it fires.")],
    payload: Payload = "{}",
    timezone: Annotated[str, typer.Option(help="The cron's time zone.")] = "UTC",
    queue: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int, typer.Option()] = 0,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Fire a job on a cron schedule."""
    with connected(url, api_key) as client:
        schedule = client.create_schedule(
            name, cron, job_type, json_object(payload), timezone=timezone, queue=queue,
            priority=priority, paused=paused,
        )  # fmt: skip
        _show(schedule, as_json, f"schedule {schedule.id}")


_by_id(schedules_app, "pause", Client.pause_schedule, "Stop firing until resumed.")
_by_id(schedules_app, "resume", Client.resume_schedule, "Fire again from the next cron time.")


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
