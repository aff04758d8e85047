"""Built-in job types; importing this package registers them."""

from __future__ import annotations

from conveyor.handlers import cpu, noop, sleep

__all__ = ["cpu", "noop", "sleep"]
