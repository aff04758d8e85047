"""What a load run is told through the environment (the Makefile passes it on untouched).

Environment variables rather than flags, because `make load` is the documented entry point
and `LOAD_DURATION=300 make load` is how a developer changes one thing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_URL = "http://127.0.0.1:8080"  # where `make run` serves
N = TypeVar("N", int, float)


class OptionError(ValueError):
    """A LOAD_ setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class LoadOptions:
    url: str
    duration_s: int
    users: int
    spawn_rate: float
    think_s: float  # mean pause between a user's tasks; 0 runs them back to back
    accounts: int  # accounts the API users share (created up front through the admin API)
    admin_email: str
    admin_password: str
    results: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LoadOptions:
        env = os.environ if env is None else env
        password = env.get("LOAD_ADMIN_PASSWORD") or env.get("CONVEYOR_ADMIN_PASSWORD", "")
        if not password:
            raise OptionError(
                "LOAD_ADMIN_PASSWORD: the password of the server's admin (the one `conveyor "
                "run` printed at its first start, or its CONVEYOR_ADMIN_PASSWORD) is needed to "
                "create the suite's accounts"
            )
        users = _number(env, "LOAD_USERS", "10", int)
        return cls(
            url=env.get("LOAD_URL", DEFAULT_URL).rstrip("/"),
            duration_s=_number(env, "LOAD_DURATION", "60", int),
            users=users,
            spawn_rate=_number(env, "LOAD_SPAWN_RATE", str(max(users / 5, 1)), float),
            think_s=_number(env, "LOAD_THINK", "0.5", float, minimum=0),
            accounts=_number(env, "LOAD_ACCOUNTS", str(min(users, 10)), int),
            admin_email=env.get("LOAD_ADMIN_EMAIL")
            or env.get("CONVEYOR_ADMIN_EMAIL", "admin@conveyor.local"),
            admin_password=password,
            results=Path(env.get("LOAD_RESULTS", str(RESULTS_DIR))),
        )


def _number(
    env: Mapping[str, str], name: str, default: str, kind: type[N], minimum: float = 1
) -> N:
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise OptionError(f"{name}={raw!r}: not a number") from None
    if value < minimum:
        raise OptionError(f"{name}={raw!r}: at least {minimum:g}")
    return value
