"""Job types as declared: `HandlerSpec` and the `Blueprint` that a handler module fills.

A module declares its types on its own blueprint (`blueprint = Blueprint()`, then
`@blueprint.job(...)`); nothing is registered anywhere else at import time. A `Registry`
(worker/registry.py) includes blueprints when the engine is built. This module imports no
handler module, so handlers can import it without a cycle.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_type_hints

from pydantic import BaseModel, TypeAdapter

from conveyor.domain.flow import (
    KeySource,
    Limit,
    Unique,
    check_names,
    check_source,
    check_submit_limits,
)
from conveyor.domain.retry import DEFAULT_RETRY, RetryPolicy
from conveyor.errors import ConfigurationError

ExecutorKind = Literal["async", "thread", "process"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class HandlerSpec:
    """Everything the engine needs to know about a job type."""

    name: str
    func: Callable[..., Any]
    payload_model: type[BaseModel]
    result_adapter: TypeAdapter[Any]
    queue: str = "default"
    max_attempts: int = 3
    timeout: float | None = None
    priority: int = 0
    retry: RetryPolicy = DEFAULT_RETRY
    executor: ExecutorKind = "async"
    description: str = ""
    result_schema: dict[str, Any] = field(default_factory=dict)
    # Flow control (domain/flow.py, docs/flow-control.md): the limits a job of this type is
    # under, whose share of the fleet it competes for, and when two submits are one job.
    limits: tuple[Limit, ...] = ()
    fair_key: KeySource = "owner"
    unique: Unique | None = None
    # Limits a submit may apply, with a key the submit names (`limits: {name: key}`); their
    # values are configuration like `limits`' (docs/flow-control.md, "Limits chosen at submit").
    submit_limits: tuple[Limit, ...] = ()

    @property
    def all_limits(self) -> tuple[Limit, ...]:
        """Every limit a job of this type may be under: declared, and chosen at submit."""
        return (*self.limits, *self.submit_limits)


class Blueprint:
    """Job types declared together (plus any blueprints given), for a registry to include."""

    def __init__(self, *included: Blueprint) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        for blueprint in included:
            self.include(blueprint)

    def add(self, spec: HandlerSpec) -> None:
        """One name, one function: adding the same function again is harmless."""
        existing = self._specs.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ConfigurationError(f"job type {spec.name!r} is registered twice")
        self._specs[spec.name] = spec

    def include(self, other: Blueprint) -> None:
        """Add every type `other` holds now (a module's blueprint is full once it is imported)."""
        for spec in other:
            self.add(spec)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(sorted(self._specs.values(), key=lambda spec: spec.name))

    def job(
        self,
        name: str,
        *,
        queue: str = "default",
        max_attempts: int = 3,
        timeout: float | None = None,
        priority: int = 0,
        retry: RetryPolicy = DEFAULT_RETRY,
        executor: ExecutorKind | None = None,
        limits: tuple[Limit, ...] = (),
        fair_key: KeySource = "owner",
        unique: Unique | None = None,
        submit_limits: Sequence[Limit] = (),
    ) -> Callable[[F], F]:
        """Declare `func(ctx, payload)` as job type `name`; the function itself is unchanged."""
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        check_names(tuple(limits), name)
        check_submit_limits(tuple(submit_limits), tuple(limits), name)
        check_source(fair_key, f"{name}: fair_key")

        def decorate(func: F) -> F:
            payload_model, result_type = _signature_types(name, func)
            adapter: TypeAdapter[Any] = TypeAdapter(result_type)
            kind = executor or ("async" if inspect.iscoroutinefunction(func) else "thread")
            if kind == "async" and not inspect.iscoroutinefunction(func):
                raise ConfigurationError(f"{name}: executor 'async' needs an async def")
            self.add(
                HandlerSpec(
                    name=name,
                    func=func,
                    payload_model=payload_model,
                    result_adapter=adapter,
                    queue=queue,
                    max_attempts=max_attempts,
                    timeout=timeout,
                    priority=priority,
                    retry=retry,
                    executor=kind,
                    description=inspect.getdoc(func) or "",
                    result_schema=adapter.json_schema(),
                    limits=tuple(limits),
                    fair_key=fair_key,
                    unique=unique,
                    submit_limits=tuple(submit_limits),
                )
            )
            return func

        return decorate


def _signature_types(name: str, func: Callable[..., Any]) -> tuple[type[BaseModel], Any]:
    hints = get_type_hints(func)
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    if len(params) != 2:
        raise ConfigurationError(f"{name}: a handler takes (ctx, payload)")
    payload = hints.get(params[1].name)
    if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise ConfigurationError(f"{name}: the payload must be annotated with a pydantic model")
    result = hints.get("return", Any)
    return payload, (Any if result is type(None) else result)
