"""Built-in job types; importing this package registers them."""

from __future__ import annotations

from conveyor.handlers import (
    account_mail,
    cpu,
    email,
    generic,
    noop,
    sleep,
    store_visits,
    task_autocomplete,
    webhook,
)

__all__ = [
    "account_mail",
    "cpu",
    "email",
    "generic",
    "noop",
    "sleep",
    "store_visits",
    "task_autocomplete",
    "webhook",
]
