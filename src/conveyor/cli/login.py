"""`conveyor login|logout`, the login they keep, and connecting the client commands.

`conveyor login` keeps the server URL and the login's tokens in a file only the user can
read (`CONVEYOR_CLIENT_CONFIG`, else the user's config directory); the other client commands
use it, or `--api-key` / `CONVEYOR_API_KEY` instead. Every failure is one red line on stderr
and exit code 2.

The client library (httpx, pydantic) is imported when a command connects, not when the
command line is read, so `conveyor --help` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from conveyor.cli.output import InputError, error_line, out

if TYPE_CHECKING:
    from conveyor.client import Client, ConveyorClientError, Tokens

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
        from conveyor.client import (
            ConnectionFailed,
            ConveyorAPIError,
            Unauthorized,
            ValidationFailed,
        )

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
    from conveyor.client import Client

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
    from conveyor.client import ConveyorClientError

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
    from conveyor.client import Client, ConveyorClientError

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
    from conveyor.client import Client, ConveyorClientError

    saved = load_login()
    if saved is None:
        out.print("not logged in")
        return
    client = Client(saved.url, token=saved.access_token, refresh_token=saved.refresh_token)
    with client, contextlib.suppress(ConveyorClientError):
        client.logout()
    config_path().unlink(missing_ok=True)
    out.print(f"logged out of {saved.url}", highlight=False)
