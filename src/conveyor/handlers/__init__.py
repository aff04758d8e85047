"""Built-in job types; importing this package registers them."""

from __future__ import annotations

from conveyor.handlers import cpu, email, generic, noop, sleep, task_autocomplete

__all__ = ["cpu", "email", "generic", "noop", "sleep", "task_autocomplete"]
