"""`@job`: the process-wide blueprint of the library, as `@job` and as `@job("name", ...)`.

The blueprint is one per process, so every type declared here has a name of its own
(`lib_reg_...`); declaring one twice with the same function is harmless.
"""

from __future__ import annotations

import inspect
from typing import get_type_hints

import pytest
from pydantic import BaseModel

import conveyor
from conveyor.domain.retry import RetryPolicy
from conveyor.errors import ConfigurationError
from conveyor.library import registry
from conveyor.library.registry import JobOptions, default, job
from conveyor.runtime import load_handlers
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext
from conveyor.worker.registry import default_blueprint


class Order(BaseModel):
    order_id: int


def test_bare_job_names_the_type_after_the_function_and_returns_it_unchanged() -> None:
    async def lib_reg_bare(ctx: JobContext, payload: Order) -> int:
        """Bills one order."""
        return payload.order_id

    declared = job(lib_reg_bare)

    assert declared is lib_reg_bare
    spec = next(s for s in default if s.name == "lib_reg_bare")
    assert (spec.func, spec.queue, spec.max_attempts) == (lib_reg_bare, "default", 3)
    assert (spec.payload_model, spec.executor, spec.description) == (
        Order,
        "async",
        "Bills one order.",
    )


def test_named_job_takes_the_blueprints_options() -> None:
    policy = RetryPolicy(base=2.0, jitter=0)

    @conveyor.job("lib_reg.named", queue="billing", max_attempts=7, timeout=3.5, retry=policy)
    def bill(ctx: JobContext, payload: Order) -> str:
        return "billed"

    spec = next(s for s in default if s.name == "lib_reg.named")
    assert spec.func is bill
    assert (spec.queue, spec.max_attempts, spec.timeout, spec.retry) == ("billing", 7, 3.5, policy)
    assert spec.executor == "thread"  # a plain def runs in the thread pool


def test_options_without_a_name_keep_the_functions_name() -> None:
    @job(queue="lib_reg_q", priority=5)
    async def lib_reg_options_only(ctx: JobContext, payload: Order) -> None: ...

    spec = next(s for s in default if s.name == "lib_reg_options_only")
    assert (spec.queue, spec.priority) == ("lib_reg_q", 5)


def test_two_functions_of_one_name_are_refused() -> None:
    @job("lib_reg_twice")
    async def first(ctx: JobContext, payload: Order) -> None: ...

    with pytest.raises(ConfigurationError, match="registered twice"):

        @job("lib_reg_twice")
        async def second(ctx: JobContext, payload: Order) -> None: ...


def test_a_badly_declared_function_is_refused_at_import() -> None:
    with pytest.raises(ConfigurationError, match="pydantic model"):

        @job
        async def lib_reg_untyped(ctx: JobContext, payload: dict) -> None:  # type: ignore[type-arg]
            ...

    with pytest.raises(ConfigurationError, match="max_attempts"):
        job("lib_reg_never", max_attempts=0)


def test_the_default_blueprint_is_the_one_handler_modules_fill() -> None:
    """So `conveyor worker --handlers app.jobs` and the API find `@conveyor.job` types too."""
    assert default is default_blueprint

    @job
    async def lib_reg_everywhere(ctx: JobContext, payload: Order) -> None: ...

    assert "lib_reg_everywhere" in load_handlers([], [default])
    assert "lib_reg_everywhere" in Blueprint(registry.default)
    # a module of @conveyor.job types named as --handlers names it
    assert "lib_greet" in load_handlers(["tests.library.lib_handlers"])


def test_the_options_are_the_blueprints_own() -> None:
    """`JobOptions` names every keyword option of `Blueprint.job`, with the same type."""
    signature = inspect.signature(Blueprint.job)
    keywords = {
        name: param
        for name, param in signature.parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    }
    hints = get_type_hints(Blueprint.job)
    options = get_type_hints(JobOptions)
    assert options.keys() == keywords.keys()
    assert {name: options[name] for name in keywords} == {name: hints[name] for name in keywords}
