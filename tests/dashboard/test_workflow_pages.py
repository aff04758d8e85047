"""The dashboard's workflow pages over plain HTTP on each database: the list, the graph,
the live regions, the actions, and who may see and do what."""

from __future__ import annotations

import re

import httpx

from conveyor.domain.states import JobState
from conveyor.domain.workflows import StepSpec, WorkflowSpec, WorkflowState
from tests.api.conftest import PASSWORD
from tests.dashboard.conftest import Browserless, csrf_of, sign_in

DIAMOND = WorkflowSpec(
    "nightly",
    (
        StepSpec("fetch", "noop"),
        StepSpec("left", "noop", depends_on=("fetch",)),
        StepSpec("right", "noop", depends_on=("fetch",)),
        StepSpec("merge", "noop", depends_on=("left", "right")),
    ),
)


async def _user(dash: Browserless, address: str) -> tuple[httpx.AsyncClient, str, str]:
    await dash.api.engine.accounts.create_user(address, PASSWORD)
    client = await dash.client()
    csrf = await sign_in(client, address, PASSWORD)
    (user,) = [u for u in await dash.api.engine.accounts.list_users() if u.email == address]
    return client, csrf, user.id


async def test_the_list_and_the_page_draw_the_graph_coloured_by_state(dash: Browserless) -> None:
    engine = dash.api.engine
    _, _, ada = await _user(dash, "ada@example.com")
    detail = await engine.workflows.submit(DIAMOND, owner_id=ada)
    wid = detail.workflow.id

    listing = await dash.admin.get("/dashboard/workflows")
    assert listing.status_code == 200
    assert f"/dashboard/workflows/{wid}" in listing.text and "nightly" in listing.text
    assert 'href="/dashboard/workflows"' in listing.text  # in the navigation
    assert wid not in (await dash.admin.get("/dashboard/workflows?state=completed")).text

    page = await dash.admin.get(f"/dashboard/workflows/{wid}")
    assert page.status_code == 200, page.text
    assert '<svg class="dag"' in page.text
    states = dict(re.findall(r'data-step="([^"]+)" data-state="([^"]+)"', page.text))
    assert states == {"fetch": "queued", "left": "waiting", "right": "waiting", "merge": "waiting"}
    assert page.text.count('<path class="edge') == 4
    for step in detail.steps:
        assert f'href="/dashboard/jobs/{step.job_id}"' in page.text
    assert f'data-events="/dashboard/workflows/{wid}/events' in page.text
    assert 'data-live="workflow"' in page.text

    first = detail.steps[0]
    job_page = await dash.admin.get(f"/dashboard/jobs/{first.job_id}")
    assert f'href="/dashboard/workflows/{wid}" data-workflow-link>step fetch of' in job_page.text

    parts = await dash.admin.get(
        f"/dashboard/workflows/{wid}/parts", headers={"Accept": "application/json"}
    )
    assert parts.status_code == 200
    body = parts.json()
    assert body["state"] == "running"
    assert set(body["html"]) == {"status", "graph", "steps"}
    assert '<svg class="dag"' in body["html"]["graph"]


async def test_actions_cancel_retry_delete_and_another_users_workflow_is_404(
    dash: Browserless,
) -> None:
    engine = dash.api.engine
    client_a, csrf_a, a_id = await _user(dash, "a@example.com")
    client_b, csrf_b, _ = await _user(dash, "b@example.com")
    wid = (await engine.workflows.submit(DIAMOND, owner_id=a_id)).workflow.id
    base = f"/dashboard/workflows/{wid}"

    assert (await client_b.get(base)).status_code == 404
    assert wid not in (await client_b.get("/dashboard/workflows")).text
    r = await client_b.post(f"{base}/cancel", data={"csrf_token": csrf_b})
    assert r.status_code == 404
    assert (await client_b.get(f"{base}/events")).status_code == 404
    assert (await engine.workflows.get(wid)).workflow.state is WorkflowState.RUNNING

    forged = await client_a.post(f"{base}/cancel", data={"csrf_token": "forged"})
    assert forged.status_code == 403

    early = await client_a.post(f"{base}/delete", data={"csrf_token": csrf_a})
    assert (
        early.status_code == 303 and early.headers["location"] == base
    )  # a message, not a 409 page
    cancelled = await client_a.post(f"{base}/cancel", data={"csrf_token": csrf_a})
    assert cancelled.status_code == 303
    detail = await engine.workflows.get(wid)
    assert detail.workflow.state is WorkflowState.CANCELLED
    assert {s.state for s in detail.steps} == {JobState.CANCELLED}

    page = await client_a.get(base)
    assert "Retry failed steps" in page.text and "Cancel workflow" not in page.text
    retried = await client_a.post(f"{base}/retry", data={"csrf_token": csrf_of(page.text)})
    assert retried.status_code == 303
    assert (await engine.workflows.get(wid)).workflow.state is WorkflowState.RUNNING
    await engine.workflows.cancel(wid)
    gone = await client_a.post(f"{base}/delete", data={"csrf_token": csrf_a})
    assert gone.status_code == 303 and gone.headers["location"] == "/dashboard/workflows"
    assert (await client_a.get(base)).status_code == 404
