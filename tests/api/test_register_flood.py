"""Registering a taken address many times mails its owner once per cooldown (issue 14,
finding 3), and the answers stay byte-for-byte those of a new address."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import PASSWORD, api_settings, running_api


async def test_registering_a_taken_address_repeatedly_queues_one_mail(
    db_url: str, tmp_path: Path
) -> None:
    # An hour's window, so the attempts below cannot straddle two windows.
    settings = api_settings(db_url, tmp_path, register_notice_cooldown=3600)
    async with running_api(settings) as api:
        await api.user("ada@example.com")
        answers = []
        for n in range(8):
            r = await api.client.post(
                "/api/v1/auth/register", json={"email": "ada@example.com", "password": PASSWORD}
            )
            new = await api.client.post(
                "/api/v1/auth/register", json={"email": f"new{n}@example.com", "password": PASSWORD}
            )
            answers.append(((r.status_code, r.content), (new.status_code, new.content)))
        assert all(taken == new for taken, new in answers), answers[0]
        mails = await api.mails_to("ada@example.com")
        assert len(mails) == 2, [m["Subject"] for m in mails]  # the code, and one notice
