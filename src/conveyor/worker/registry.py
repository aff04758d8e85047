"""The job types one engine knows: a `Registry` built from blueprints, and the blueprints of
user handler modules and entry points.

The engine builds its registry explicitly (runtime.py: the built-ins' blueprint, then these);
nothing here imports the built-in handlers, and nothing registers into a module global.
"""

from __future__ import annotations

import importlib
from functools import reduce
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from conveyor.errors import ConfigurationError, UnknownJobType
from conveyor.worker.blueprint import Blueprint, HandlerSpec

ENTRY_POINT_GROUP = "conveyor.handlers"


class Registry(Blueprint):
    """Job types by name, as the worker runs them and the services validate submissions."""

    def get(self, name: str) -> HandlerSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownJobType(
                f"unknown job type {name!r}; known: {', '.join(sorted(self._specs)) or 'none'}",
                type=name,
            ) from None


# `from conveyor.worker.registry import job`, the way user modules declared job types before
# blueprints, keeps working: such types go to this blueprint, which is included for a module
# (or entry point) that does not name a blueprint of its own.
default_blueprint = Blueprint()
job = default_blueprint.job


def load_blueprints(modules: list[str]) -> list[Blueprint]:
    """The blueprints of the entry points of group `conveyor.handlers`, then of `modules`
    (each `package.module`, or `package.module:attribute` naming a blueprint or registry)."""
    found = [_entry_blueprint(entry) for entry in entry_points(group=ENTRY_POINT_GROUP)]
    return found + [_named_blueprint(name) for name in modules]


def blueprint_of(target: object) -> Blueprint:
    """A blueprint (or registry) as is; a module's `blueprint`; otherwise the default one,
    which the import of a module written with the plain `@job` has filled."""
    if isinstance(target, Blueprint):
        return target
    own = getattr(target, "blueprint", None) if isinstance(target, ModuleType) else None
    return own if isinstance(own, Blueprint) else default_blueprint


def _entry_blueprint(entry: EntryPoint) -> Blueprint:
    try:
        return blueprint_of(entry.load())
    except Exception as exc:
        raise ConfigurationError(
            f"cannot load handlers from entry point {entry.name}: {exc}"
        ) from exc


def _named_blueprint(name: str) -> Blueprint:
    module_name, _, attribute = name.partition(":")
    try:
        module: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import handler module {name!r}: {exc}") from exc
    if not attribute:
        return blueprint_of(module)
    try:
        return blueprint_of(reduce(getattr, attribute.split("."), module))
    except AttributeError as exc:
        raise ConfigurationError(f"cannot load handlers from {name!r}: {exc}") from exc
