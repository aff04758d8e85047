"""The suite's accounts, made before the load starts through the admin API (no backdoor).

An admin's `POST /api/v1/admin/users` creates verified accounts without mail, which is what
a load run needs: sign-up with a mailed code would measure the mail path, not the API. The
accounts are fixed (`load-N@example.com`) so that runs against one database reuse them (a
taken address answers 409 and is kept) instead of piling up new ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from load.options import LoadOptions

API = "/api/v1"
TIMEOUT_S = 30.0


class AccountError(RuntimeError):
    """The suite could not sign in as the admin or create its accounts; the message says why."""


@dataclass(frozen=True)
class Account:
    email: str
    password: str


def suite_accounts(count: int) -> list[Account]:
    """The first `count` load accounts; the passwords only need to pass the password policy
    (the accounts hold nothing but load-test jobs)."""
    return [Account(f"load-{i}@example.com", f"conveyor load account {i}") for i in range(count)]


def ensure_accounts(options: LoadOptions) -> list[Account]:
    """Create (or keep) the suite's accounts on the server at `options.url`."""
    accounts = suite_accounts(options.accounts)
    with httpx.Client(base_url=options.url, timeout=TIMEOUT_S) as http:
        token = _admin_token(http, options)
        auth = {"authorization": f"Bearer {token}"}
        for account in accounts:
            body = {"email": account.email, "password": account.password, "verified": True}
            answer = http.post(f"{API}/admin/users", json=body, headers=auth)
            if answer.status_code not in (201, 409):  # 409: made by an earlier run
                raise AccountError(f"creating {account.email}: {_said(answer)}")
    return accounts


def _admin_token(http: httpx.Client, options: LoadOptions) -> str:
    try:
        answer = http.post(
            f"{API}/auth/login",
            json={"email": options.admin_email, "password": options.admin_password},
        )
    except httpx.HTTPError as exc:
        raise AccountError(f"no Conveyor answers at {options.url}: {exc}") from exc
    if answer.status_code != 200:
        raise AccountError(f"signing in as {options.admin_email}: {_said(answer)}")
    return str(answer.json()["access_token"])


def _said(answer: httpx.Response) -> str:
    return f"{answer.status_code} {answer.text[:300]}"


def write_accounts(accounts: list[Account], path: Path) -> None:
    """The file the Locust process reads its accounts from (LOAD_ACCOUNTS_FILE)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(a) for a in accounts]))
    path.chmod(0o600)


def read_accounts(path: Path) -> list[Account]:
    return [Account(**entry) for entry in json.loads(path.read_text())]
