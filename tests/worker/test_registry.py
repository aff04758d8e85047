"""Handler registration: blueprints declared by modules, included into a registry the engine
builds; `module` and `module:attribute` names; the plain `@job` of older modules."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from conveyor.errors import ConfigurationError, UnknownJobType
from conveyor.handlers import blueprint as builtins
from conveyor.runtime import load_handlers
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext
from conveyor.worker.registry import Registry, default_blueprint, load_blueprints
from tests.worker import blueprint_handlers

MODULE = blueprint_handlers.__name__


class Empty(BaseModel):
    pass


def test_a_registry_holds_what_it_includes_and_names_what_it_lacks() -> None:
    registry = Registry(blueprint_handlers.blueprint)
    assert [spec.name for spec in registry] == ["bp_main"]
    assert registry.get("bp_main").queue == "bp"
    with pytest.raises(UnknownJobType, match="known: bp_main"):
        registry.get("bp_extra")


def test_a_name_taken_by_another_function_is_refused() -> None:
    mine = Blueprint()

    @mine.job("bp_main")
    async def impostor(ctx: JobContext, payload: Empty) -> None: ...

    registry = Registry(blueprint_handlers.blueprint)
    registry.include(blueprint_handlers.blueprint)  # the same function again: harmless
    with pytest.raises(ConfigurationError, match="registered twice"):
        registry.include(mine)


def test_a_module_gives_its_blueprint_and_module_colon_attribute_another() -> None:
    module, attribute = load_blueprints([MODULE, f"{MODULE}:extra"])[-2:]
    assert module is blueprint_handlers.blueprint
    assert attribute is blueprint_handlers.extra


def test_a_module_without_a_blueprint_gives_the_default_one() -> None:
    (found,) = load_blueprints(["tests.support.handlers"])[-1:]
    assert found is default_blueprint
    assert "record" in found


@pytest.mark.parametrize("name", ["tests.worker.no_such_module", f"{MODULE}:no_such_attribute"])
def test_a_wrong_name_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError, match="no_such"):
        load_blueprints([name])


def test_the_engine_registry_has_the_builtins_then_the_named_modules() -> None:
    registry = load_handlers([MODULE])
    names = {spec.name for spec in registry}
    assert {spec.name for spec in builtins} | {"bp_main"} <= names
    assert {"noop", "sleep", "email", "webhook"} <= names
    assert "bp_extra" not in names
