"""Logging to stdout and a rotated file, as text or JSON; job fields ride along as extras.

Every line about a job carries its id, type and attempt, and a line logged while serving an
API request its request id. They come from `extra=` or, without it, from the context: the
worker runs each job inside `job_context` (so a handler's own `logging` calls and `ctx.log`
lines carry them too), and the API's request middleware sets `request_id`. JSON lines have
them as fields (`job_id`, `job_type`, `attempt`, `request_id`, `worker_id`); text lines end
with a compact `job=... type=... attempt=... request=...`.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor.settings import private_file

_EXTRAS = ("job_id", "job_type", "attempt", "request_id", "worker_id")
_SHORT = {"job_id": "job", "job_type": "type", "request_id": "request", "worker_id": "worker"}

request_id: ContextVar[str | None] = ContextVar("conveyor_request_id", default=None)
_job: ContextVar[Mapping[str, Any] | None] = ContextVar("conveyor_job", default=None)


def job_fields(job_id: str, job_type: str, attempt: int) -> dict[str, Any]:
    """The `extra=` of a line about a job logged outside its context."""
    return {"job_id": job_id, "job_type": job_type, "attempt": attempt}


@contextmanager
def job_context(job_id: str, job_type: str, attempt: int) -> Iterator[None]:
    """Lines logged inside (and in tasks created inside) are about this job."""
    token = _job.set(job_fields(job_id, job_type, attempt))
    try:
        yield
    finally:
        _job.reset(token)


class ContextFields(logging.Filter):
    """Adds the context's job and request fields to records that do not carry their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _job.get()
        if fields is not None:
            for name, value in fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        current = request_id.get()
        if current is not None and not hasattr(record, "request_id"):
            record.request_id = current
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRAS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(
            f"{_SHORT.get(n, n)}={getattr(record, n)}" for n in _EXTRAS if hasattr(record, n)
        )
        return f"{line}  {extras}" if extras else line


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Every file it opens (the first, and each new one after a rollover) is 0600: log lines
    carry ids, addresses and error messages that are no one else's business."""

    def _open(self) -> Any:
        private_file(Path(self.baseFilename))
        return super()._open()


def setup_logging(level: str = "INFO", fmt: str = "text", log_file: Path | None = None) -> None:
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        private_file(log_file)
        handlers.append(
            PrivateRotatingFileHandler(
                log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(ContextFields())
        root.addHandler(handler)
    root.setLevel(level.upper())
