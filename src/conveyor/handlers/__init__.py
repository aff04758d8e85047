"""Built-in job types, one module each; `blueprint` holds them all for the engine to include."""

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
from conveyor.worker.blueprint import Blueprint

blueprint = Blueprint(
    account_mail.blueprint,
    cpu.blueprint,
    email.blueprint,
    generic.blueprint,
    noop.blueprint,
    sleep.blueprint,
    store_visits.blueprint,
    task_autocomplete.blueprint,
    webhook.blueprint,
)

__all__ = ["blueprint"]
