"""Schemathesis' stateful phase run against an API whose state outlives each scenario.

Hypothesis replays choices and assumes that the same choices draw the same data. A state
machine's draws depend on the API's answers (a link takes its value from a response, a rule
waits for an answer in its bundle), and the database keeps what each scenario did: a
scenario that lists tasks and deletes the first one leaves a shorter list for the next
scenario that makes the same choices, whose link then finds no value and draws one. Hypothesis
reports that as `FlakyStrategyDefinition` (or another `Flaky`, or an assertion inside its
data tree) though no call failed (CI, 2026-12-05: the admin's run on both databases).

Schemathesis' own runner reads it the same way: a replay that meets another state fails the
run only if a check failed (engine/run/stateful, `_classify_flaky`), and it starts again.
`run_stateful` does both: any failed check fails the test with the first failing call, and a
run that hypothesis ends for its own inconsistency starts again with the next seed until the
scenarios asked for have run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from hypothesis.errors import Flaky

# A run that hypothesis ends on its own inconsistency restarts at most this often; each run
# makes at least one scenario, so the budget is spent long before in practice.
MAX_RUNS = 20
DATA_TREE = "hypothesis.internal.conjecture.datatree"


@dataclass
class StatefulRun:
    """What the scenarios did: how many ran, in how many hypothesis runs, what failed."""

    scenarios: int = 0
    runs: int = 0
    calls: int = 0
    failures: list[str] = field(default_factory=list)


def inconsistent_replay(exc: BaseException) -> bool:
    """Hypothesis' verdict that the same choices drew other data: `Flaky`, or the assertion
    its data tree raises when a replay draws past a value an earlier run rejected."""
    if isinstance(exc, Flaky):
        return True
    if not isinstance(exc, AssertionError) or exc.__traceback__ is None:
        return False
    frame = exc.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    return frame.tb_frame.f_globals.get("__name__") == DATA_TREE


def run_stateful(
    schema: schemathesis.BaseSchema,
    *,
    scenarios: int,
    settings: hypothesis.settings,
    checks: list[Any],
    headers: Callable[[schemathesis.Case[Any]], dict[str, str]] = lambda case: {},
    seed: int = 0,
    before_call: Callable[[schemathesis.Case[Any]], None] = lambda case: None,
) -> StatefulRun:
    """Run `scenarios` scenarios of linked calls, each response validated by `checks` with
    `headers(case)` sent; a failed check fails the test (hypothesis' report when it could
    replay the failure, else an AssertionError naming the first failing call). The runs are
    seeded `seed`, `seed + 1`, ...: reproducible against the same state. `before_call` may
    change a case before it is sent."""
    run = StatefulRun()

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            run.scenarios += 1

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"headers": headers(case)}

        def before_call(self, case: schemathesis.Case[Any]) -> None:
            before_call(case)

        def validate_response(
            self, response: Any, case: schemathesis.Case[Any], **kwargs: Any
        ) -> None:
            try:
                case.validate_response(
                    response,
                    checks=checks,
                    headers=headers(case),
                    transport_kwargs=kwargs or None,
                    recorder=getattr(self, "recorder", None),
                )
            except Exception as exc:
                run.failures.append(f"{case.method} {case.path}: {exc}"[:3000])
                raise
            run.calls += 1

    while run.scenarios < scenarios and run.runs < MAX_RUNS:
        hypothesis.seed(seed + run.runs)(Machine)
        run.runs += 1
        remaining = scenarios - run.scenarios
        try:
            Machine.run(settings=hypothesis.settings(settings, max_examples=remaining))
        except Exception as exc:
            if not inconsistent_replay(exc):
                raise  # a failure hypothesis replayed, or an error of the harness
            if run.failures:  # the replay met another state: show what failed first
                raise AssertionError(f"first failing call: {run.failures[0]}") from None
            continue  # no call failed: the API's state moved on, run again
        break
    return run
