"""Conveyor: a durable job-processing service, and a library (docs/library.md).

`from conveyor import job, Worker, run, enqueue, ...` works, yet `import conveyor` loads
nothing but this module: each name is imported when it is first used (PEP 562). The command
line imports this package before every command, and its client commands must not pay for
the server (pydantic models, SQLAlchemy, FastAPI) they never use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from conveyor.library.enqueue import (
        Enqueued,
        EnqueuedWorkflow,
        Job,
        aenqueue,
        aenqueue_batch,
        aenqueue_workflow,
        enqueue,
        enqueue_batch,
        enqueue_workflow,
    )
    from conveyor.library.registry import job
    from conveyor.library.worker import Worker, run
    from conveyor.worker.context import JobContext

# Each public name and the module it comes from.
_LAZY = {
    "job": "conveyor.library.registry",
    "Worker": "conveyor.library.worker",
    "run": "conveyor.library.worker",
    "JobContext": "conveyor.worker.context",
    "enqueue": "conveyor.library.enqueue",
    "aenqueue": "conveyor.library.enqueue",
    "enqueue_batch": "conveyor.library.enqueue",
    "aenqueue_batch": "conveyor.library.enqueue",
    "Enqueued": "conveyor.library.enqueue",
    "Job": "conveyor.library.enqueue",
    "enqueue_workflow": "conveyor.library.enqueue",
    "aenqueue_workflow": "conveyor.library.enqueue",
    "EnqueuedWorkflow": "conveyor.library.enqueue",
}

# Literal, for type checkers and IDEs; tests/library/test_lazy_import.py keeps it `_LAZY`'s.
__all__ = [
    "Enqueued",
    "EnqueuedWorkflow",
    "Job",
    "JobContext",
    "Worker",
    "__version__",
    "aenqueue",
    "aenqueue_batch",
    "aenqueue_workflow",
    "enqueue",
    "enqueue_batch",
    "enqueue_workflow",
    "job",
    "run",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then keep it here (later uses cost nothing)."""
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
