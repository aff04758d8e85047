"""The job types a library user declares, gathered in one process-wide blueprint, and `@job`.

Library enqueues validate payloads against it before writing anything, and an embedded
worker runs what it holds (plus `CONVEYOR_HANDLER_MODULES`).

`default` is the same blueprint as `conveyor.worker.registry.default_blueprint`, the one a
handler module without a `blueprint` of its own fills: so a module written with
`from conveyor import job` is also found by `conveyor worker --handlers module` and by the
API (which validates submits against it), not only by a worker embedded in the same process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict, TypeVar, Unpack, overload

from conveyor.domain.flow import KeySource, Limit, Unique
from conveyor.domain.retry import RetryPolicy
from conveyor.worker.blueprint import Blueprint, ExecutorKind
from conveyor.worker.registry import default_blueprint

F = TypeVar("F", bound=Callable[..., Any])

default: Blueprint = default_blueprint


class JobOptions(TypedDict, total=False):
    """The options of `Blueprint.job`, by keyword, each with its type (its defaults are
    `Blueprint.job`'s: one place). tests/library/test_registry.py keeps the two in step."""

    queue: str
    max_attempts: int
    timeout: float | None
    priority: int
    retry: RetryPolicy
    executor: ExecutorKind | None
    limits: tuple[Limit, ...]
    fair_key: KeySource
    unique: Unique | None
    submit_limits: Sequence[Limit]


@overload
def job(func: F, /) -> F: ...
@overload
def job(name: str | None = None, /, **options: Unpack[JobOptions]) -> Callable[[F], F]: ...
def job(target: Any = None, /, **options: Unpack[JobOptions]) -> Any:
    """Declare `func(ctx, payload)` as a job type in the process-wide blueprint.

    `@job` names the type after the function (`send_invoice`); `@job("name", queue=...,
    max_attempts=...)` names it and sets its options (`@job(queue=...)` keeps the function's
    name). The plain function name rather than `module.function`: a type's name is what every
    submit (HTTP, CLI, other services) writes and what queued rows hold, so it must survive the
    function moving to another module; two functions of one name are refused at import
    ("registered twice"), never silently merged. The function itself is returned unchanged.
    """
    if callable(target):
        return default.job(target.__name__, **options)(target)
    if target is not None:
        return default.job(target, **options)  # its options are checked here, not at use

    def decorate(func: F) -> F:
        return default.job(func.__name__, **options)(func)

    return decorate
