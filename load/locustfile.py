"""The scenarios: what an API client and a dashboard reader do, as Locust users.

Every request is named `scenario: call` (the summary's two first columns, `load.summary`):
sign-in, submit one, submit batch, wait over SSE, list, dashboard. Ids in paths are
replaced by `{id}` so that each call is one row whatever job it touched. Run by `load.run`
(`locust -f load/locustfile.py ...`), which hands over the accounts in LOAD_ACCOUNTS_FILE
and the pause between tasks in LOAD_THINK, and reads the figures this module writes to
LOAD_SUMMARY_FILE once every user has stopped (`load.summary`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.stats import StatsError

from load.accounts import Account, read_accounts

API = "/api/v1"
DASH = "/dashboard"
BATCH_SIZE = 20
SSE_TIMEOUT_S = 60.0  # a noop job's end on a machine under load; longer is an error
TERMINAL = ("completed", "failed", "cancelled")
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')

_accounts: list[Account] = read_accounts(Path(os.environ["LOAD_ACCOUNTS_FILE"]))
_next_account = itertools.cycle(_accounts)
# Dashboard readers take the API clients' accounts from the first on, so they see jobs.
_next_reader_account = itertools.cycle(_accounts)
THINK_S = float(os.environ.get("LOAD_THINK", "0.5"))


def _payload() -> dict[str, Any]:
    """A noop job's payload with a reference the `text` filter can look for."""
    return {"order": f"load-{uuid.uuid4().hex[:12]}"}


class ApiClient(HttpUser):
    """A program using the HTTP API with a bearer token (one account per user, shared round
    robin when there are more users than accounts)."""

    weight = 4
    wait_time = between(0, 2 * THINK_S)

    def on_start(self) -> None:
        self.account = next(_next_account)
        self.refresh_token = ""
        self.job_ids: list[str] = []
        self.sign_in()

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}

    @task(1)
    def sign_in(self) -> None:
        body = {"email": self.account.email, "password": self.account.password}
        with self.client.post(
            f"{API}/auth/login", json=body, name="sign-in: POST /auth/login", catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code} {answer.text[:200]}")
                raise StopUser()  # no token: nothing else this user does can work
            tokens = answer.json()
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]

    @task(1)
    def refresh(self) -> None:
        answer = self.client.post(
            f"{API}/auth/refresh",
            json={"refresh_token": self.refresh_token},
            name="sign-in: POST /auth/refresh",
        )
        if answer.ok:
            tokens = answer.json()
            self.access_token = tokens["access_token"]
            self.refresh_token = tokens["refresh_token"]

    @task(6)
    def submit_one(self) -> None:
        self._submit("submit one: POST /jobs")

    def _submit(self, name: str) -> str | None:
        answer = self.client.post(
            f"{API}/jobs",
            json={"type": "noop", "payload": _payload(), "tags": ["load"]},
            headers=self._auth(),
            name=name,
        )
        if not answer.ok:
            return None
        job_id = str(answer.json()["id"])
        self.job_ids = [*self.job_ids[-49:], job_id]  # the last 50, for the reads
        return job_id

    @task(2)
    def submit_batch(self) -> None:
        jobs = [{"type": "noop", "payload": _payload()} for _ in range(BATCH_SIZE)]
        self.client.post(
            f"{API}/jobs/batch",
            json={"jobs": jobs},
            headers=self._auth(),
            name=f"submit batch: POST /jobs/batch ({BATCH_SIZE} jobs)",
        )

    @task(2)
    def wait_over_sse(self) -> None:
        """Submit, then follow the job's event stream until its end: the time a client that
        submits and waits sees (`... → end`), besides the stream's time to its headers."""
        started = time.perf_counter()
        job_id = self._submit("wait over SSE: POST /jobs")
        if job_id is None:
            return
        headers = {**self._auth(), "accept": "text/event-stream"}
        ended: str | None = None
        error: Exception | None = None
        with self.client.get(
            f"{API}/jobs/{job_id}/events",
            headers=headers,
            stream=True,
            timeout=SSE_TIMEOUT_S,
            name="wait over SSE: GET /jobs/{id}/events (headers)",
            catch_response=True,
        ) as stream:
            try:
                for line in stream.iter_lines(decode_unicode=True):
                    if line.startswith("event:") and line.split(":", 1)[1].strip() in TERMINAL:
                        ended = line
                        break
                if ended is None:
                    error = RuntimeError(f"the stream of {job_id} ended without a job end")
            except Exception as exc:  # a read timeout, a reset: the wait failed
                error = exc
            stream.close()
        self.environment.events.request.fire(
            request_type="SSE",
            name="wait over SSE: submit → job end event",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )

    @task(3)
    def list_with_filters(self) -> None:
        auth = self._auth()
        self.client.get(
            f"{API}/jobs",
            params={"state": "completed", "type": "noop", "limit": 20},
            headers=auth,
            name="list: GET /jobs?state=&type=",
        )
        self.client.get(
            f"{API}/jobs",
            params={"text": "load-", "tag": "load", "limit": 20},
            headers=auth,
            name="list: GET /jobs?text=&tag=",
        )
        self.client.get(
            f"{API}/jobs",
            params={"sort": "-priority", "offset": 20, "limit": 20},
            headers=auth,
            name="list: GET /jobs?sort=&offset=",
        )
        if self.job_ids:
            self.client.get(
                f"{API}/jobs/{self.job_ids[-1]}", headers=auth, name="list: GET /jobs/{id}"
            )
        self.client.get(f"{API}/stats", headers=auth, name="list: GET /stats")


class DashboardReader(HttpUser):
    """A person with the dashboard open: a cookie session, its pages and their fragments."""

    weight = 1
    wait_time = between(0, 2 * THINK_S)

    def on_start(self) -> None:
        account = next(_next_reader_account)
        form = self.client.get(f"{DASH}/login", name="sign-in: GET /dashboard/login")
        found = CSRF_INPUT.search(form.text)
        if found is None:
            raise StopUser()
        fields = {"login": account.email, "password": account.password}
        with self.client.post(
            f"{DASH}/login",
            data={**fields, "csrf_token": found.group(1), "next": f"{DASH}/"},
            allow_redirects=False,
            name="sign-in: POST /dashboard/login",
            catch_response=True,
        ) as answer:
            if answer.status_code != 303:
                answer.failure(f"{answer.status_code}: no session")
                raise StopUser()

    @task(3)
    def overview(self) -> None:
        self.client.get(f"{DASH}/", name="dashboard: GET /dashboard/")
        self.client.get(f"{DASH}/summary", name="dashboard: GET /dashboard/summary")

    @task(3)
    def jobs(self) -> None:
        page = self.client.get(
            f"{DASH}/jobs", params={"state": "completed"}, name="dashboard: GET /dashboard/jobs"
        )
        ids = re.findall(rf'href="{DASH}/jobs/([0-9A-Za-z_-]+)"', page.text)
        if ids:
            self.client.get(f"{DASH}/jobs/{ids[0]}", name="dashboard: GET /dashboard/jobs/{id}")

    @task(1)
    def queues(self) -> None:
        self.client.get(f"{DASH}/queues", name="dashboard: GET /dashboard/queues")


def write_summary(environment: Environment, **_: Any) -> None:
    """Every call's figures, after the last user stopped (Locust's own CSV files are
    written every second, so they can miss the last requests)."""
    stats = environment.stats
    entries = [
        {
            "name": e.name,
            "method": e.method,
            "requests": e.num_requests,
            "failures": e.num_failures,
            "per_s": e.total_rps,
            **{f"p{p}": e.get_response_time_percentile(p / 100) for p in (50, 95, 99)},
        }
        for e in [*stats.entries.values(), stats.total]
    ]
    errors = [
        {"name": e.name, "error": StatsError.parse_error(e.error), "occurrences": e.occurrences}
        for e in stats.errors.values()
    ]
    summary = {"calls": entries, "errors": errors}
    Path(os.environ["LOAD_SUMMARY_FILE"]).write_text(json.dumps(summary, indent=1))


events.test_stop.add_listener(write_summary)  # type: ignore[no-untyped-call]  # Locust leaves it untyped
