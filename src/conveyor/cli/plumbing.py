"""What every database-direct command shares: its settings, an open engine, the event loop,
and Conveyor's typed errors turned into one red line.

The server, and even the settings (pydantic), are imported inside the functions that need
them, so `conveyor --help` and the client commands load none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from conveyor.cli.output import without_password
from conveyor.errors import ConveyorError, Unavailable

if TYPE_CHECKING:
    from conveyor.runtime import Engine
    from conveyor.settings import Settings

console = Console()
err = Console(stderr=True)
T = TypeVar("T")

Handlers = Annotated[
    str | None,
    typer.Option("--handlers", help="Comma-separated modules that register job types."),
]


def load_settings(*, command: str | None = None, **overrides: Any) -> Settings:
    """The settings, with the command line's `overrides`; a long-running `command` names
    its database sessions after itself unless CONVEYOR_DB_APPLICATION_NAME does."""
    from pydantic import ValidationError

    from conveyor.settings import Settings

    try:
        base = Settings()
    except ValidationError as exc:
        die(f"invalid settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    values = {k: v for k, v in overrides.items() if v is not None}
    if command is not None and base.db_application_name is None:
        values["db_application_name"] = f"conveyor {command}"
    return base.model_copy(update=values) if values else base


def die(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning Conveyor's typed errors into one clear line."""
    try:
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:  # pragma: no cover - uvloop is there on Linux
            return asyncio.run(coro)
    except Unavailable as exc:
        die(f"{exc.message} ({_safe_url()})")
    except ConveyorError as exc:
        die(_explain(exc))


def _explain(exc: ConveyorError) -> str:
    """The message, plus which fields were wrong when validation says so."""
    problems = [
        f"{'.'.join(str(part) for part in e.get('loc', ())) or 'payload'}: {e.get('msg')}"
        for e in exc.details.get("errors", [])
        if isinstance(e, dict)
    ]
    return "; ".join([exc.message, *problems])


def _safe_url() -> str:
    from conveyor.settings import Settings

    try:
        return without_password(Settings().database_url)
    except Exception:
        return "database URL not readable"


def quiet_logs() -> None:
    """One-shot commands print their own clear error; library warnings would only repeat it."""
    from conveyor.logs import setup_logging  # it reads the settings module: not for --help

    setup_logging("ERROR", "text", None)


def log_setup(settings: Settings) -> None:
    from conveyor.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format, settings.log_file)


@contextlib.asynccontextmanager
async def opened(settings: Settings, *, apply_migrations: bool = False) -> AsyncIterator[Engine]:
    """The engine for the block, closed after it whatever happens."""
    from conveyor.runtime import Engine

    engine = await Engine.open(settings, apply_migrations=apply_migrations)
    try:
        yield engine
    finally:
        await engine.close()
