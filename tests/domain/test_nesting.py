"""Nested workflows are flattened before anything else sees them (docs/workflows.md, "Nested
workflows"): a part's steps are named `<part>.<step>`, a dependency on a part waits for its
last steps, a part's own dependencies hold its first steps, policies come from the nearest
part that sets one; what only nesting can get wrong is refused naming the part."""

from __future__ import annotations

import pytest

from conveyor.domain.nesting import MAX_EDGES, MAX_NESTING, Nested, Part, flattened
from conveyor.domain.workflows import DependencyPolicy, StepSpec, WorkflowSpec, validate
from conveyor.errors import InvalidInput

CANCEL, RUN, SKIP = DependencyPolicy.CANCEL, DependencyPolicy.RUN, DependencyPolicy.SKIP


def s(name: str, *deps: str, policy: DependencyPolicy | None = None) -> StepSpec:
    return StepSpec(name, "noop", {"n": name}, deps, policy)


def flat(name: str, parts: tuple[Part, ...], policy: DependencyPolicy = CANCEL) -> WorkflowSpec:
    return flattened(name, parts, policy).spec


def edges(spec: WorkflowSpec) -> dict[str, tuple[str, ...]]:
    return {step.name: step.depends_on for step in spec.steps}


def test_a_declaration_without_nested_parts_is_its_steps_as_given() -> None:
    steps = (s("a"), s("b", "a", "ghost"))  # validate, not flattening, names the ghost
    assert flattened("w", steps, RUN).spec == WorkflowSpec("w", steps, RUN)
    assert flattened("w", steps, RUN).paths == ()


def test_a_nested_part_runs_after_its_dependencies_and_before_its_dependents() -> None:
    inner = Nested("clean", (s("x"), s("y"), s("z", "x")), depends_on=("fetch",))
    spec = flat("etl", (s("fetch"), inner, s("load", "clean")))
    assert edges(spec) == {
        "fetch": (),
        "clean.x": ("fetch",),  # first steps: the part's dependencies
        "clean.y": ("fetch",),
        "clean.z": ("clean.x",),  # inside: its own dependencies, prefixed
        "load": ("clean.y", "clean.z"),  # after the part: after its last steps
    }
    names = ["fetch", "x", "y", "z", "load"]
    assert [step.payload for step in spec.steps] == [{"n": n} for n in names]
    assert len(validate(spec)) == 5


def test_parts_nest_in_parts_and_may_depend_on_a_part_declared_after_them() -> None:
    deep = Nested("b", (s("c"), Nested("d", (s("e"), s("f", "e")))))
    spec = flat("w", (Nested("a", (s("first"),), depends_on=("b",)), deep))
    assert edges(spec) == {"a.first": ("b.c", "b.d.f"), "b.c": (), "b.d.e": (), "b.d.f": ("b.d.e",)}


def test_a_step_takes_its_own_policy_else_the_nearest_parts_else_none() -> None:
    inner = Nested("i", (s("x"), s("y", policy=CANCEL)), on_dependency_failure=RUN)
    outer = Nested("o", (inner, s("z")), on_dependency_failure=SKIP)
    spec = flat("w", (outer, s("top")), CANCEL)
    policies = {step.name: step.on_dependency_failure for step in spec.steps}
    assert policies == {"o.i.x": RUN, "o.i.y": CANCEL, "o.z": SKIP, "top": None}
    assert spec.on_dependency_failure == CANCEL


def test_a_dependency_names_a_part_beside_it_not_one_elsewhere() -> None:
    with pytest.raises(InvalidInput) as caught:
        flat("w", (s("a"), Nested("n", (s("x"), s("y", "a")))))
    assert "'n.y' depends on unknown step 'a'" in caught.value.message
    assert caught.value.details["field"] == "steps.1.steps.1.depends_on"


@pytest.mark.parametrize(
    ("parts", "field", "words"),
    [
        ((Nested("n", ()),), "steps.0.steps", "at least one step"),
        ((Nested("n", (s("x"), s("x"))),), "steps.0.steps.1.name", "duplicate step name 'n.x'"),
        # found once flattened, by `validate` (as a cycle or a bad payload would be): named
        # where it was declared all the same
        (
            (s("n.x"), Nested("n", (s("x"),))),
            "steps.1.steps.0.name",
            "duplicate step name 'n.x'",
        ),
        ((Nested("n", (s("x" * 99),)),), "steps.0.steps.0.name", "must match"),
        ((Nested("bad name", (s("x"),)),), "steps.0.name", "must match"),
    ],
    ids=["empty", "duplicate-inside", "duplicate-once-flattened", "name-too-long", "bad-name"],
)
def test_what_nesting_gets_wrong_is_refused_naming_the_part(
    parts: tuple[StepSpec | Nested, ...], field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        _checked(parts)
    assert words in caught.value.message
    assert caught.value.details["field"] == field


def _checked(parts: tuple[Part, ...]) -> None:
    """Flattened, then validated as the submit does, errors named where declared."""
    declared = flattened("w", parts)
    with declared.declared_places():
        validate(declared.spec)


def test_nesting_is_at_most_so_deep() -> None:
    part: StepSpec | Nested = s("x")
    for level in range(MAX_NESTING):
        part = Nested(f"n{level}", (part,))
    assert len(flat("w", (part,)).steps) == 1
    with pytest.raises(InvalidInput) as caught:
        flat("w", (Nested("top", (part,)),))
    assert f"at most {MAX_NESTING} deep" in caught.value.message


def test_a_small_declaration_cannot_ask_for_millions_of_dependencies() -> None:
    # 25 million once expanded: refused at the step that passes the limit, before the rest
    wide = Nested("wide", tuple(s(f"p{i}") for i in range(5_000)))
    after = tuple(s(f"d{i}", "wide") for i in range(5_000))
    with pytest.raises(InvalidInput) as caught:
        flat("w", (wide, *after))
    assert f"{MAX_EDGES:,} dependencies" in caught.value.message
    assert caught.value.details["field"] == f"steps.{MAX_EDGES // 5_000 + 1}"


def test_an_error_found_once_flattened_names_where_the_step_was_declared() -> None:
    declared = flattened("w", (s("a"), Nested("n", (s("x"), s("y")))))
    assert declared.paths == ("steps.0", "steps.1.steps.0", "steps.1.steps.1")
    found = InvalidInput(
        "step 'n.y': payload is not valid", field="steps.2.payload",
        errors=[{"loc": ["steps", 2, "payload", "n"], "msg": "Field required"}],
    )  # fmt: skip
    with pytest.raises(InvalidInput) as caught, declared.declared_places():
        raise found
    assert caught.value.message == found.message
    assert caught.value.details == {
        "field": "steps.1.steps.1.payload",
        "errors": [{"loc": ["steps", 1, "steps", 1, "payload", "n"], "msg": "Field required"}],
    }
    with pytest.raises(InvalidInput) as caught, declared.declared_places():
        raise InvalidInput("the steps form a cycle", field="steps")
    assert caught.value.details == {"field": "steps"}


def test_at_the_top_a_name_not_declared_is_left_for_validate_as_a_stored_step() -> None:
    part = Nested("n", (s("x"),), depends_on=("stored",))
    assert edges(flat("w", (part, s("y", "stored")))) == {"n.x": ("stored",), "y": ("stored",)}
    assert [step.name for step in validate(flat("w", (part,)), existing=["stored"])] == ["n.x"]
    with pytest.raises(InvalidInput) as caught:
        _checked((s("a"), Nested("n", (s("x"),)), s("y", "ghost")))
    assert "'y' depends on unknown step 'ghost'" in caught.value.message
    assert caught.value.details["field"] == "steps.2.depends_on"
