"""LOAD_* settings: defaults that drive `make run`'s address, and refusals that say why."""

from __future__ import annotations

import pytest
from load.options import DEFAULT_URL, LoadOptions, OptionError


def test_defaults_drive_make_runs_address_for_a_minute() -> None:
    options = LoadOptions.from_env({"CONVEYOR_ADMIN_PASSWORD": "from the server's env"})
    assert options.url == DEFAULT_URL
    assert (options.duration_s, options.users, options.accounts) == (60, 10, 10)
    assert options.admin_password == "from the server's env"


def test_load_settings_win_over_the_servers() -> None:
    env = {
        "CONVEYOR_ADMIN_PASSWORD": "server",
        "LOAD_ADMIN_PASSWORD": "suite",
        "LOAD_URL": "http://10.0.0.5:9000/",
        "LOAD_USERS": "50",
        "LOAD_DURATION": "300",
    }
    options = LoadOptions.from_env(env)
    assert options.admin_password == "suite"
    assert options.url == "http://10.0.0.5:9000"
    assert (options.users, options.spawn_rate, options.duration_s) == (50, 10.0, 300)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "LOAD_ADMIN_PASSWORD"),
        ({"LOAD_ADMIN_PASSWORD": "x", "LOAD_DURATION": "a minute"}, "LOAD_DURATION"),
        ({"LOAD_ADMIN_PASSWORD": "x", "LOAD_USERS": "0"}, "LOAD_USERS"),
    ],
)
def test_a_setting_that_cannot_be_used_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(OptionError, match=named):
        LoadOptions.from_env(env)
