"""`conveyor migrate|config|info|users|version`: looking after one installation, straight on
its database (no server needs to run)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from conveyor import __version__
from conveyor.cli.output import without_password
from conveyor.cli.plumbing import console, die, load_settings, opened, quiet_logs, run_async

if TYPE_CHECKING:
    from conveyor.runtime import Engine

T = TypeVar("T")

users_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)


def migrate(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Apply nothing: exit 0 when the schema is up to date, 1 when migrations "
            "are pending (a process waiting for the migration to run).",
        ),
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="With --check: check again every 2 s, the database unreachable meanwhile "
            "included, for up to this many seconds.",
        ),
    ] = 0.0,
) -> None:
    """Apply database migrations (or, with --check, tell whether any are pending)."""
    settings = load_settings()
    quiet_logs()
    if check:
        _check_migrations(settings.database_url, wait)
        return

    async def main() -> None:
        from conveyor.services.migrations import apply_migrations

        await apply_migrations(settings.database_url, settings.database_schema)

    run_async(main())
    console.print("migrations applied")


def _check_migrations(database_url: str, wait: float) -> None:
    """Exit 0 once no migration is pending, 1 if some still are after `wait` seconds."""
    from conveyor.errors import Unavailable
    from conveyor.services.migrations import pending_migrations

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                pending = await pending_migrations(database_url)
                if not pending or loop.time() >= deadline:
                    return pending
            except Unavailable:
                if loop.time() >= deadline:
                    raise
            await asyncio.sleep(min(2.0, max(0.0, deadline - loop.time())))

    pending = run_async(main())
    if pending:
        console.print(f"migrations pending: {', '.join(pending)}")
        raise typer.Exit(1)
    console.print("schema up to date")


def config() -> None:
    """Print the effective settings, secrets hidden."""
    settings = load_settings()
    table = Table("setting", "value", title=f"Conveyor {__version__}")
    for name, value in settings.model_dump().items():
        hidden = value is not None and ("secret" in name or "password" in name)
        shown = "**********" if hidden else value
        if name.endswith("_url") and isinstance(value, str):
            shown = without_password(value)
        table.add_row(f"CONVEYOR_{name.upper()}", str(shown))
    console.print(table)


def info(
    watch: Annotated[bool, typer.Option(help="Refresh every second until Ctrl-C.")] = False,
) -> None:
    """Queue depths by state, and the workers that are alive."""
    settings = load_settings()
    quiet_logs()

    async def main() -> None:
        async with opened(settings) as engine:
            if not watch:
                console.print(await _snapshot(engine))
                return
            from rich.live import Live

            with Live(await _snapshot(engine), console=console, refresh_per_second=2) as live:
                while True:
                    await asyncio.sleep(1)
                    live.update(await _snapshot(engine))

    with contextlib.suppress(KeyboardInterrupt):
        run_async(main())


async def _snapshot(engine: Engine) -> Table:
    counts = await engine.queues.counts()
    alive = await engine.workers.list_alive()
    table = Table("queue", "state", "jobs", "oldest", title="Conveyor queues")
    now = datetime.now(UTC)
    for c in counts:
        age = f"{(now - c.oldest_created_at).total_seconds():.0f}s" if c.oldest_created_at else ""
        table.add_row(c.queue, c.state.value, str(c.count), age)
    table.caption = f"{len(alive)} worker(s) alive: " + ", ".join(w.id for w in alive)
    return table


def version() -> None:
    """Print the version."""
    console.print(__version__)


# ---- users -------------------------------------------------------------------------------
def _with_accounts(action: Callable[[Engine], Awaitable[T]]) -> T:
    settings = load_settings()
    quiet_logs()

    async def main() -> T:
        async with opened(settings) as engine:
            return await action(engine)

    return run_async(main())


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

    table = Table(
        "id", "email", "role", "verified", "disabled", "created", "weight", "max queued",
        "max running",
    )  # fmt: skip
    users = _with_accounts(collect)
    # A narrow terminal folds the ids, never the e-mail addresses (what people look for).
    table.columns[0].overflow = "fold"
    table.columns[1].no_wrap = True
    table.columns[1].min_width = max((len(u.email) for u in users), default=5)
    for user in users:
        table.add_row(
            user.id, user.email, user.role, str(user.verified), str(user.disabled),
            user.created_at.isoformat(timespec="seconds"), f"{user.fair_weight:g}",
            _cap(user.max_queued), _cap(user.max_running),
        )  # fmt: skip
    console.print(table)


def _cap(value: int | None) -> str:
    return "default" if value is None else "none" if value == 0 else str(value)


async def _user_id(engine: Engine, email: str) -> str:
    user = await engine.accounts.find_user(email)
    if user is None:
        die(f"no account with the e-mail {email}")
    return user.id


@users_app.command("promote")
def users_promote(email: str) -> None:
    """Make an account an administrator."""

    async def promote(engine: Engine) -> Any:
        return await engine.accounts.set_role(await _user_id(engine, email), "admin")

    console.print(f"{_with_accounts(promote).email} is now an admin")


@users_app.command("disable")
def users_disable(
    email: str,
    enable: Annotated[bool, typer.Option("--enable", help="Re-enable instead.")] = False,
) -> None:
    """Disable an account (signs it out everywhere), or re-enable it with --enable."""

    async def toggle(engine: Engine) -> Any:
        return await engine.accounts.set_disabled(await _user_id(engine, email), not enable)

    user = _with_accounts(toggle)
    console.print(f"{user.email} is {'disabled' if user.disabled else 'enabled'}")


QuotaOption = Annotated[
    str | None,
    typer.Option(
        help="A number of jobs; 0: no cap; 'default': the server's setting.", show_default=False
    ),
]


@users_app.command("flow")
def users_flow(
    email: str,
    weight: Annotated[
        str | None,
        typer.Option(
            help="Share under fair dispatch, > 0 and ≤ 1000; 'default': 1.", show_default=False
        ),
    ] = None,
    max_queued: QuotaOption = None,
    max_running: QuotaOption = None,
) -> None:
    """Set an account's fair-dispatch weight and quotas (docs/flow-control.md); options left
    out are kept. With none, print the current ones."""
    changes: dict[str, Any] = {}
    if weight is not None:
        changes["fair_weight"] = _number(weight, float, "--weight")
    if max_queued is not None:
        changes["max_queued"] = _number(max_queued, int, "--max-queued")
    if max_running is not None:
        changes["max_running"] = _number(max_running, int, "--max-running")

    async def apply(engine: Engine) -> Any:
        return await engine.accounts.set_flow(await _user_id(engine, email), **changes)

    user = _with_accounts(apply)
    console.print(
        f"{user.email}: weight {user.fair_weight:g}, max queued {_cap(user.max_queued)}, "
        f"max running {_cap(user.max_running)}"
    )


def _number(text: str, kind: type[int] | type[float], option: str) -> Any:
    """An option's number; 'default' is None (the server's setting)."""
    if text.strip().lower() == "default":
        return None
    try:
        return kind(text)
    except ValueError:
        die(f"{option} must be a number or 'default', not {text!r}")
