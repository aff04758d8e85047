"""The `conveyor` command: processes (run, worker, scheduler), migrate, config, enqueue, info."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from conveyor import __version__
from conveyor.cli_follow import outcome, wait_in_outbox
from conveyor.cli_output import InputError, json_object
from conveyor.client_cli import register as register_client_commands
from conveyor.domain.states import JobState
from conveyor.errors import ConveyorError, Unavailable
from conveyor.logs import setup_logging
from conveyor.runtime import Engine
from conveyor.services.jobs import Submission
from conveyor.settings import Settings
from conveyor.store.migrate import migrate as apply_migrations

app = typer.Typer(
    name="conveyor",
    help="Conveyor: a durable job-processing service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
log = logging.getLogger("conveyor.cli")
T = TypeVar("T")

Handlers = Annotated[
    str | None,
    typer.Option("--handlers", help="Comma-separated modules that register job types."),
]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve Prometheus /metrics on this port (CONVEYOR_METRICS_PORT; host: METRICS_HOST).",
    ),
]


def main() -> None:
    app()


# ---- plumbing ------------------------------------------------------------------------------
def _settings(**overrides: Any) -> Settings:
    try:
        base = Settings()
    except ValidationError as exc:
        _die(f"invalid settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    values = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=values) if values else base


def _die(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning Conveyor's typed errors into one clear line."""
    try:
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:  # pragma: no cover - uvloop is there on Linux
            return asyncio.run(coro)
    except Unavailable as exc:
        _die(f"{exc.message} ({_safe_url()})")
    except ConveyorError as exc:
        _die(_explain(exc))


def _explain(exc: ConveyorError) -> str:
    """The message, plus which fields were wrong when validation says so."""
    problems = [
        f"{'.'.join(str(part) for part in e.get('loc', ())) or 'payload'}: {e.get('msg')}"
        for e in exc.details.get("errors", [])
        if isinstance(e, dict)
    ]
    return "; ".join([exc.message, *problems])


def _quiet_logs() -> None:
    """One-shot commands print their own clear error; library warnings would only repeat it."""
    setup_logging("ERROR", "text", None)


def _without_password(url: str) -> str:
    """A URL as it may be shown: any password in it replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _safe_url() -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(Settings().database_url).render_as_string(hide_password=True)
    except Exception:
        return "database URL not readable"


def _log_setup(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format, settings.log_file)


async def _until_signalled(stoppers: list[Callable[[bool], None]], main: Awaitable[int]) -> int:
    """First SIGINT/SIGTERM: graceful stop. Second: stop at once."""
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def on_signal() -> None:
        hits["n"] += 1
        log.info("signal received (%d); %s", hits["n"], "stopping" if hits["n"] == 1 else "forcing")
        for stop in stoppers:
            stop(hits["n"] > 1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return await main


def _exit(code: int) -> None:
    """Leave even if a sync handler's thread is still stuck in user code."""
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() > 1:
        logging.shutdown()
        os._exit(code)
    raise typer.Exit(code)


# ---- processes -----------------------------------------------------------------------------
@app.command()
def run(
    handlers: Handlers = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs at once.")] = None,
    host: Annotated[str | None, typer.Option(help="Address the API listens on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port the API listens on.")] = None,
) -> None:
    """Everything in one process: migrations, the API, a worker, the scheduler and, when a
    sink is configured, the events relay."""
    settings = _settings(handler_modules=handlers, host=host, port=port)
    _log_setup(settings)

    async def main() -> int:
        engine = await Engine.open(settings, apply_migrations=True)
        try:
            worker = engine.worker("*", concurrency)  # one process runs every queue
            scheduler = engine.scheduler()
            relay = engine.relay()  # events relay: None without a sink
            server = _server(settings, engine)

            def stop(force: bool) -> None:
                worker.stop(force)
                scheduler.stop()
                if relay is not None:
                    relay.stop()
                server.should_exit = True

            async def everything() -> int:
                tasks = [asyncio.create_task(scheduler.run()), asyncio.create_task(server.serve())]
                if relay is not None:
                    tasks.append(asyncio.create_task(relay.run()))
                code = await worker.run()
                stop(False)
                await asyncio.gather(*tasks)
                return code

            return await _until_signalled([stop], everything())
        finally:
            await engine.close()

    _exit(_run(main()))


def _server(settings: Settings, engine: Engine | None = None) -> Any:
    """A uvicorn server for the API whose signals are ours to handle."""
    import uvicorn

    from conveyor.server import create_app

    config = uvicorn.Config(
        create_app(settings, engine=engine),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )

    return _quiet_server(config)


def _quiet_server(config: Any) -> Any:
    """A uvicorn server that leaves SIGINT/SIGTERM to `_until_signalled` (for every part)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


@contextlib.asynccontextmanager
async def _metrics_endpoint(settings: Settings) -> AsyncIterator[None]:
    """Serve /metrics on METRICS_HOST:METRICS_PORT on this event loop while the block runs.

    The port is bound here, before the work starts, so a taken port is one clear error.
    """
    if settings.metrics_port is None:
        yield
        return
    import uvicorn

    from conveyor.metrics import asgi_app

    try:
        sock = socket.create_server((settings.metrics_host, settings.metrics_port))
    except OSError as exc:
        _die(f"--metrics-port {settings.metrics_port}: {exc.strerror or exc}")
    config = uvicorn.Config(
        asgi_app(), log_config=None, access_log=False, server_header=False, lifespan="off"
    )

    server = _quiet_server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-server")
    try:
        yield
    finally:
        server.should_exit = True
        await serving
        sock.close()


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    handlers: Handlers = None,
) -> None:
    """Serve the HTTP API (run several behind a load balancer to scale)."""
    settings = _settings(handler_modules=handlers, host=host, port=port)
    _log_setup(settings)

    async def main() -> int:
        server = _server(settings)

        def stop(_force: bool) -> None:
            server.should_exit = True

        await _until_signalled([stop], server.serve())
        return 0

    _exit(_run(main()))


@app.command()
def worker(
    queues: Annotated[
        str | None,
        typer.Option(help="Queues: 'a,b=2' caps b at 2 jobs at once; '*' is every queue."),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Jobs at once.")] = None,
    burst: Annotated[bool, typer.Option(help="Exit once the queues are empty.")] = False,
    handlers: Handlers = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Run a worker process."""
    settings = _settings(handler_modules=handlers, metrics_port=metrics_port)
    _log_setup(settings)

    async def main() -> int:
        engine = await Engine.open(settings)
        try:
            try:
                w = engine.worker(queues, concurrency, burst)
            except ValueError as exc:
                _die(f"--queues: {exc}")
            async with _metrics_endpoint(settings):
                return await _until_signalled([w.stop], w.run())
        finally:
            await engine.close()

    _exit(_run(main()))


@app.command()
def scheduler(handlers: Handlers = None, metrics_port: MetricsPort = None) -> None:
    """Run a scheduler process (one leads; the others stand by)."""
    settings = _settings(handler_modules=handlers, metrics_port=metrics_port)
    _log_setup(settings)

    async def main() -> int:
        engine = await Engine.open(settings)
        try:
            s = engine.scheduler()
            async with _metrics_endpoint(settings):
                return await _until_signalled([lambda _force: s.stop()], s.run())
        finally:
            await engine.close()

    _exit(_run(main()))


# ---- events relay (events/) -------------------------------------------------------------
@app.command()
def results(handlers: Handlers = None, metrics_port: MetricsPort = None) -> None:
    """Relay job events to the configured sinks (webhooks, RabbitMQ) and send webhook
    deliveries; any number may run."""
    settings = _settings(handler_modules=handlers, metrics_port=metrics_port)
    _log_setup(settings)

    async def main() -> int:
        engine = await Engine.open(settings)
        try:
            relay = engine.relay()
            if relay is None:
                _die(
                    "no event sink is configured: set CONVEYOR_AMQP_URL, or turn webhooks "
                    "back on (CONVEYOR_WEBHOOK_ENABLED=true)"
                )
            async with _metrics_endpoint(settings):
                return await _until_signalled([lambda _force: relay.stop()], relay.run())
        finally:
            await engine.close()

    _exit(_run(main()))


# ---- end of events relay ------------------------------------------------------------------
# ---- administration ------------------------------------------------------------------------
@app.command()
def migrate() -> None:
    """Apply database migrations."""
    settings = _settings()
    _quiet_logs()

    async def main() -> None:
        from conveyor.store.database import Database

        db = Database(settings.database_url)
        try:
            await apply_migrations(db)
        finally:
            await db.dispose()

    _run(main())
    console.print("migrations applied")


@app.command()
def config() -> None:
    """Print the effective settings, secrets hidden."""
    settings = _settings()
    table = Table("setting", "value", title=f"Conveyor {__version__}")
    for name, value in settings.model_dump().items():
        hidden = value is not None and ("secret" in name or "password" in name)
        shown = "**********" if hidden else value
        if name.endswith("_url") and isinstance(value, str):
            shown = _without_password(value)
        table.add_row(f"CONVEYOR_{name.upper()}", str(shown))
    console.print(table)


@app.command()
def enqueue(
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="The job type.")],
    payload: Annotated[str, typer.Option(help="JSON object, or @file.json.")] = "{}",
    queue: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int | None, typer.Option()] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds from now.")] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds.")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    handlers: Handlers = None,
    wait: Annotated[
        bool, typer.Option(help="Follow it with a progress bar; exit 1 unless it completes.")
    ] = False,
) -> None:
    """Submit one job and print its id (with --wait: its final state and result)."""
    settings = _settings(handler_modules=handlers)
    _quiet_logs()
    body = _parse_payload(payload)
    run_at = datetime.now(UTC) + timedelta(seconds=delay) if delay else None
    submission = Submission(
        type=job_type,
        payload=body,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        timeout_s=timeout,
        run_at=run_at,
        idempotency_key=idempotency_key,
    )

    async def main() -> Any:
        engine = await Engine.open(settings)
        try:
            enqueued = await engine.jobs.submit(submission)
            return await wait_in_outbox(engine, enqueued.id) if wait else enqueued
        finally:
            await engine.close()

    try:
        done = _run(main())
    except KeyboardInterrupt:  # Ctrl-C while waiting: the job goes on; no traceback
        raise typer.Exit(130) from None
    if wait:
        typer.echo(json.dumps(outcome(done)))
        raise typer.Exit(0 if done.state is JobState.COMPLETED else 1)
    typer.echo(json.dumps({"id": done.id, "state": done.state.value, "created": done.created}))


def _parse_payload(text: str) -> dict[str, Any]:
    try:
        return json_object(text)
    except InputError as exc:
        _die(str(exc))


@app.command()
def info(
    watch: Annotated[bool, typer.Option(help="Refresh every second until Ctrl-C.")] = False,
) -> None:
    """Queue depths by state, and the workers that are alive."""
    settings = _settings()
    _quiet_logs()

    async def snapshot(engine: Engine) -> Table:
        counts = await engine.backend.counts()
        alive = await engine.backend.list_workers(alive_within=settings.lease_seconds)
        table = Table("queue", "state", "jobs", "oldest", title="Conveyor queues")
        now = datetime.now(UTC)
        for c in counts:
            age = (
                f"{(now - c.oldest_created_at).total_seconds():.0f}s" if c.oldest_created_at else ""
            )
            table.add_row(c.queue, c.state.value, str(c.count), age)
        table.caption = f"{len(alive)} worker(s) alive: " + ", ".join(w.id for w in alive)
        return table

    async def main() -> None:
        engine = await Engine.open(settings)
        try:
            if not watch:
                console.print(await snapshot(engine))
                return
            with Live(await snapshot(engine), console=console, refresh_per_second=2) as live:
                while True:
                    await asyncio.sleep(1)
                    live.update(await snapshot(engine))
        finally:
            await engine.close()

    with contextlib.suppress(KeyboardInterrupt):
        _run(main())


# ---- client commands over the REST API (client_cli.py): login, logout, submit, jobs, schedules
register_client_commands(app)

users_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")


def _with_accounts(action: Callable[[Engine], Awaitable[T]]) -> T:
    settings = _settings()
    _quiet_logs()

    async def main() -> T:
        engine = await Engine.open(settings)
        try:
            return await action(engine)
        finally:
            await engine.close()

    return _run(main())


@users_app.command("create")
def users_create(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator.")] = False,
) -> None:
    """Create a verified account."""
    role = "admin" if admin else "user"
    user = _with_accounts(lambda e: e.accounts.create_user(email, password, role, verified=True))
    console.print(f"created {user.email} ({user.role}) id={user.id}")


@users_app.command("list")
def users_list() -> None:
    """List accounts."""

    async def collect(engine: Engine) -> list[Any]:
        found: list[Any] = []
        after: str | None = None
        while page := await engine.accounts.list_users(after_id=after, limit=200):
            found.extend(page)
            after = page[-1].id
        return found

    table = Table("id", "email", "role", "verified", "disabled", "created")
    for user in _with_accounts(collect):
        table.add_row(
            user.id, user.email, user.role, str(user.verified), str(user.disabled),
            user.created_at.isoformat(timespec="seconds"),
        )  # fmt: skip
    console.print(table)


def _find(engine: Engine, email: str) -> Awaitable[Any]:
    async def find() -> Any:
        record = await engine.accounts.store.find_by_email(email.strip().lower())
        if record is None:
            _die(f"no account with the e-mail {email}")
        return record

    return find()


@users_app.command("promote")
def users_promote(email: str) -> None:
    """Make an account an administrator."""

    async def promote(engine: Engine) -> Any:
        return await engine.accounts.set_role((await _find(engine, email)).id, "admin")

    console.print(f"{_with_accounts(promote).email} is now an admin")


@users_app.command("disable")
def users_disable(
    email: str,
    enable: Annotated[bool, typer.Option("--enable", help="Re-enable instead.")] = False,
) -> None:
    """Disable an account (signs it out everywhere), or re-enable it with --enable."""

    async def toggle(engine: Engine) -> Any:
        return await engine.accounts.set_disabled((await _find(engine, email)).id, not enable)

    user = _with_accounts(toggle)
    console.print(f"{user.email} is {'disabled' if user.disabled else 'enabled'}")


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)
