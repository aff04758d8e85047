from __future__ import annotations

import logging
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from conveyor.errors import ConfigurationError, Unavailable
from conveyor.mail import MailDeliveryError, Message, backend_from_url
from conveyor.mail.backends import ConsoleBackend, FileBackend
from conveyor.mail.smtp import SmtpBackend

MAIL_FROM = "Conveyor <noreply@example.org>"
OTP_MAIL = Message(
    to="ann@example.com",
    subject="Your Conveyor code",
    text="Your verification code is 012345. It expires in 10 minutes.",
)


def _read_eml(path: Path) -> EmailMessage:
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def test_console_backend_logs_the_whole_message(caplog: pytest.LogCaptureFixture) -> None:
    backend = backend_from_url("console://", MAIL_FROM)
    caplog.set_level(logging.INFO, logger="conveyor.mail")

    message_id = await backend.send(OTP_MAIL)

    [record] = [r for r in caplog.records if r.name == "conveyor.mail"]
    assert record.levelno == logging.INFO
    logged = record.getMessage()
    assert message_id in logged
    assert f"From: {MAIL_FROM}" in logged
    assert "To: ann@example.com" in logged
    assert "Subject: Your Conveyor code" in logged
    assert "Your verification code is 012345." in logged


async def test_console_backend_logs_the_html_part_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.mail")
    message = Message(to="a@example.com", subject="Hi", text="plain", html="<b>012345</b>")

    await ConsoleBackend(MAIL_FROM).send(message)

    assert "<b>012345</b>" in caplog.text


async def test_file_backend_writes_one_parseable_eml_per_message(tmp_path: Path) -> None:
    directory = tmp_path / "not" / "yet" / "there"
    backend = backend_from_url(f"file://{directory}", MAIL_FROM)

    first_id = await backend.send(OTP_MAIL)
    second_id = await backend.send(Message(to="bob@example.com", subject="Second", text="2"))

    files = sorted(directory.iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]
    first, second = (_read_eml(path) for path in files)
    assert first["Message-ID"] == first_id
    assert first["To"] == "ann@example.com"
    assert first["From"] == MAIL_FROM
    assert first["Subject"] == "Your Conveyor code"
    assert "012345" in first.get_content()
    assert (second["Message-ID"], second["To"]) == (second_id, "bob@example.com")


async def test_file_backend_reports_an_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(MailDeliveryError) as caught:
        await FileBackend(blocker, MAIL_FROM).send(OTP_MAIL)

    assert isinstance(caught.value, Unavailable)


def test_url_picks_the_backend(tmp_path: Path) -> None:
    file_backend = backend_from_url("file:///var/mail/conveyor%20dev", MAIL_FROM)
    local_backend = backend_from_url("file://localhost/tmp/mail", MAIL_FROM)
    smtp_backend = backend_from_url("smtps://mailer:secret@mail.example.org", MAIL_FROM)

    assert isinstance(backend_from_url("console://", MAIL_FROM), ConsoleBackend)
    assert isinstance(file_backend, FileBackend)
    assert file_backend.directory == Path("/var/mail/conveyor dev")
    assert isinstance(local_backend, FileBackend)
    assert local_backend.directory == Path("/tmp/mail")
    assert isinstance(smtp_backend, SmtpBackend)
    assert (smtp_backend.config.hostname, smtp_backend.config.port) == ("mail.example.org", 465)


@pytest.mark.parametrize("url", ["file://mailhost/var/mail", "file://"])
def test_unusable_file_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="file://"):
        backend_from_url(url, MAIL_FROM)


@pytest.mark.parametrize(
    "url", ["ftp://user:hunter2@host/", "sendgrid://hunter2", "hunter2", "", "http://x"]
)
def test_unknown_scheme_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown scheme") as caught:
        backend_from_url(url, MAIL_FROM)

    assert "console://" in caught.value.message
    assert "hunter2" not in caught.value.message
