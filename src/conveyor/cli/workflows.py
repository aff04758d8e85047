"""`conveyor workflows list|get|submit|watch|cancel|retry|delete`: workflows on a server.

A client of the REST API like client.py (`conveyor.client`, nothing of the server). `submit`
reads the workflow as the API takes it (`{"name", "steps": [...]}`: docs/workflows.md) from a
JSON file; `watch` prints the steps' events and the workflow's own until it settles and, like
`submit --wait`, exits 0 if it completed, 1 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli.client import AsJson
from conveyor.cli.login import ApiKey, Url, connected
from conveyor.cli.output import out, print_json, read_spec, rows_table

if TYPE_CHECKING:
    from conveyor.client import Client, JobEvent, Workflow

WorkflowId = Annotated[str, typer.Argument(metavar="ID", help="The workflow's id.")]
workflows_app = typer.Typer(
    name="workflows", help="Workflows on the server: submit, list, get, watch, cancel, retry."
)
LIST_COLUMNS = ("id", "name", "state", "step_count", "counts", "created_at")
STEP_COLUMNS = ("name", "state", "type", "depends_on", "attempt", "job_id", "result")


def show_workflow(found: Workflow, as_json: bool) -> None:
    """A workflow: JSON, or a line about it and a table of its steps."""
    if as_json:
        print_json(found.model_dump(mode="json", by_alias=True))
        return
    counts = ", ".join(f"{n} {state}" for state, n in sorted(found.counts.items()) if n)
    out.print(f"workflow {found.id} {found.name!r}: {found.state} ({counts})", highlight=False)
    rows = [
        {**s.model_dump(mode="json"), "depends_on": ", ".join(s.depends_on)} for s in found.steps
    ]
    out.print(rows_table(rows, STEP_COLUMNS))


def _exit_for(found: Workflow) -> None:
    if found.state != "completed":
        raise typer.Exit(1)


@workflows_app.command("submit")
def workflows_submit(
    file: Annotated[Path, typer.Argument(help="A JSON file: {name, steps: [...]}.")],
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="Follow it until it settles.")] = False,
    wait_timeout: Annotated[float | None, typer.Option(help="Give up waiting after s.")] = None,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a workflow; with --wait, exit 0 once it completed, 1 otherwise."""
    with connected(url, api_key) as client:
        spec = read_spec(file)  # inside: a bad file is one red line, as any failure
        found = client.workflows.submit(spec, idempotency_key=idempotency_key)
        if wait:
            found = client.workflows.wait(found.id, wait_timeout)
    show_workflow(found, as_json)
    if wait:
        _exit_for(found)


@workflows_app.command("list")
def workflows_list(
    state: Annotated[str | None, typer.Option(help="running, completed, failed, cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Your workflows, newest first."""
    with connected(url, api_key) as client:
        found = client.workflows.list(state=state, limit=limit, page_size=min(limit, 200))
        rows = [w.model_dump(mode="json", exclude={"steps", "edges"}) for w in found]
    if as_json:
        print_json(rows)
    else:
        out.print(rows_table(rows, LIST_COLUMNS))


def _by_id(name: str, doc: str) -> None:
    def command(
        workflow_id: WorkflowId, as_json: AsJson = False, url: Url = None, api_key: ApiKey = None
    ) -> None:
        with connected(url, api_key) as client:
            found = _act(client, name, workflow_id)
        if found is None:
            out.print(f"workflow {workflow_id} deleted", highlight=False)
        else:
            show_workflow(found, as_json)

    command.__doc__ = doc
    workflows_app.command(name)(command)


def _act(client: Client, name: str, workflow_id: str) -> Workflow | None:
    calls = client.workflows
    if name == "delete":
        calls.delete(workflow_id)
        return None
    action = {"get": calls.get, "cancel": calls.cancel, "retry": calls.retry}[name]
    return action(workflow_id)


_by_id("get", "One workflow with its steps (state, dependencies, result).")
_by_id("cancel", "Cancel every step of the workflow that has not settled.")
_by_id("retry", "Run the failed, cancelled and skipped steps again (and what follows them).")
_by_id("delete", "Delete a settled workflow with its steps.")


def _event_line(event: JobEvent) -> str:
    who = "workflow" if event.type == "workflow" else event.job.type
    head = f"{event.at:%H:%M:%S} {event.type:<9} {event.job.state.value:<9} {who} {event.job.id}"
    return f"{head} {json.dumps(event.data)}" if event.data else head


@workflows_app.command("watch")
def workflows_watch(
    workflow_id: WorkflowId,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many s.")] = None,
    as_json: AsJson = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Print the steps' events and the workflow's own, live, until it settles (JSON lines
    with --json); exit 0 if it completed, 1 otherwise."""
    with connected(url, api_key) as client:
        after: str | None = None
        while True:  # again if the workflow was retried after the end seen
            for event in client.workflows.watch(workflow_id, timeout, after=after):
                if as_json:
                    print_json(event.model_dump(mode="json"))
                else:
                    out.print(_event_line(event), highlight=False, markup=False)
                after = event.event_id
            if (found := client.workflows.get(workflow_id)).finished:
                break
    _exit_for(found)
