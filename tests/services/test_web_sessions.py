"""Dashboard sessions on each database: they end on expiry, sign-out, sign-out everywhere,
a disabled account or a new password, and are never interchangeable with API tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.errors import Unauthenticated
from conveyor.runtime import build_accounts, load_handlers
from conveyor.services.accounts import AccountService
from conveyor.services.accounts.web_sessions import WebSessions
from conveyor.services.jobs import JobService
from conveyor.settings import Settings
from conveyor.store.backend import QueueBackend

SECRET = "test-secret-key-that-is-long-enough-for-hs256"
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def accounts(backend: QueueBackend) -> AccountService:
    settings = Settings(
        database_url="sqlite:///unused.db", secret_key=SECRET, mail_url="console://"
    )
    service = build_accounts(settings, JobService(backend, load_handlers([])))
    await service.create_user("ann@example.com", PASSWORD)
    return service


def sessions(accounts: AccountService, clock: Clock | None = None) -> WebSessions:
    return WebSessions(accounts, SECRET, timedelta(hours=1), clock)


async def test_a_session_resumes_until_it_expires(accounts: AccountService) -> None:
    clock = Clock()
    web = sessions(accounts, clock)
    cookie, started = await web.sign_in("ann@example.com", PASSWORD)
    resumed = await web.resume(cookie)
    assert resumed.user.email == "ann@example.com"
    assert resumed.family == started.family and resumed.csrf == started.csrf
    clock.now += timedelta(hours=1, minutes=1)
    with pytest.raises(Unauthenticated):
        await web.resume(cookie)


async def test_every_way_out_ends_it(accounts: AccountService) -> None:
    web = sessions(accounts)
    cookie, session = await web.sign_in("ann@example.com", PASSWORD)
    other, _ = await web.sign_in("ann@example.com", PASSWORD)
    await web.sign_out(session)
    with pytest.raises(Unauthenticated):
        await web.resume(cookie)
    await web.resume(other)  # another browser's session goes on
    await accounts.set_disabled(session.user.id, True)
    with pytest.raises(Unauthenticated):
        await web.resume(other)
    await accounts.set_disabled(session.user.id, False)
    third, session = await web.sign_in("ann@example.com", PASSWORD)
    await accounts.change_password(session.user, PASSWORD, "another good password")
    with pytest.raises(Unauthenticated):
        await web.resume(third)
    fourth, session = await web.sign_in("ann@example.com", "another good password")
    pair = await accounts.login("ann@example.com", "another good password")
    await web.sign_out_everywhere(session)
    with pytest.raises(Unauthenticated):
        await web.resume(fourth)
    with pytest.raises(Exception, match="signed out"):
        await accounts.refresh(pair.refresh)  # the API's session ended too


async def test_api_tokens_and_cookies_do_not_cross(accounts: AccountService) -> None:
    web = sessions(accounts)
    pair = await accounts.login("ann@example.com", PASSWORD)
    for token in (pair.refresh, pair.access, "garbage"):
        with pytest.raises(Unauthenticated):
            await web.resume(token)
    cookie, _ = await web.sign_in("ann@example.com", PASSWORD)
    with pytest.raises(Exception, match="not valid"):
        await accounts.user_from_access_token(cookie)
    with pytest.raises(Exception, match="not valid"):
        await accounts.refresh(cookie)


async def test_csrf_tokens(accounts: AccountService) -> None:
    web = sessions(accounts)
    _, one = await web.sign_in("ann@example.com", PASSWORD)
    _, two = await web.sign_in("ann@example.com", PASSWORD)
    assert one.csrf != two.csrf
    assert web.check_csrf(one, one.csrf)
    assert not web.check_csrf(one, two.csrf)
    assert not web.check_csrf(one, None)
    nonce = web.new_nonce()
    assert web.check_login_csrf(nonce, web.login_csrf(nonce))
    assert not web.check_login_csrf(web.new_nonce(), web.login_csrf(nonce))
    assert not web.check_login_csrf(None, web.login_csrf(nonce))
    with pytest.raises(Unauthenticated):
        await web.sign_in("ann@example.com", "wrong password")
