"""A common password is refused wherever a new one is chosen, with a message that says why;
the reference documents' example passwords keep working (tests/compat replays their calls)."""

from __future__ import annotations

from tests.api.conftest import PASSWORD, Api
from tests.api.test_security_support import error_of


async def test_sign_up_and_password_change_refuse_a_common_password(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/auth/register", json={"email": "ada@example.com", "password": "Password1"}
    )
    assert r.status_code == 422, r.text
    assert "most common" in error_of(r)["message"]
    assert await api.mails_to("ada@example.com") == []

    ada = await api.user("ada@example.com")
    r = await api.client.post(
        "/api/v1/me/password",
        json={"old_password": PASSWORD, "new_password": "iloveyou"},
        headers=ada,
    )
    assert r.status_code == 422, r.text
    assert "most common" in error_of(r)["message"]
    await api.login("ada@example.com", PASSWORD)  # unchanged


async def test_the_reference_example_passwords_are_accepted(api: Api) -> None:
    for n, password in enumerate(["securePassword123", "securepassword123"]):
        r = await api.client.post(
            "/api/v1/auth/register", json={"email": f"u{n}@example.com", "password": password}
        )
        assert r.status_code == 202, r.text
