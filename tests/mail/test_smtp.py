from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conveyor.errors import ConfigurationError
from conveyor.mail import MailDeliveryError, Message, backend_from_url
from conveyor.mail.smtp import SmtpConfig

MAIL_FROM = "Conveyor <noreply@example.org>"
USER = "mailer@example.org"
PASSWORD = "p@ss:w/rd%"
QUOTED_CREDENTIALS = "mailer%40example.org:p%40ss%3Aw%2Frd%25"


@dataclass
class Received:
    """What the real SMTP server saw: envelopes, parsed messages and logins."""

    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        # handled=False makes the server answer 535 itself on failure.
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    port: int
    received: Received


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real aiosmtpd server on loopback that offers AUTH without TLS (tests only)."""
    received = Received()
    port = _free_port()
    controller = Controller(
        received,
        hostname="127.0.0.1",
        port=port,
        authenticator=received.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield SmtpServer(port, received)
    finally:
        controller.stop()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never says a word, to exercise the timeout."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_sends_to_a_real_smtp_server(smtp_server: SmtpServer) -> None:
    backend = backend_from_url(f"smtp://127.0.0.1:{smtp_server.port}", MAIL_FROM)
    message = Message(to="ann@example.com", subject="Your code", text="Code: 012345", html="<b/>")

    message_id = await backend.send(message)

    [received] = smtp_server.received.messages
    assert received["To"] == "ann@example.com"
    assert received["Subject"] == "Your code"
    assert received["From"] == MAIL_FROM
    assert received["Message-ID"] == message_id
    text = received.get_body(("plain",))
    assert text is not None
    assert text.get_content().strip() == "Code: 012345"
    assert smtp_server.received.envelopes == [("noreply@example.org", ["ann@example.com"])]
    assert smtp_server.received.logins == []


async def test_logs_in_with_percent_decoded_credentials(smtp_server: SmtpServer) -> None:
    url = f"smtp://{QUOTED_CREDENTIALS}@127.0.0.1:{smtp_server.port}"

    await backend_from_url(url, MAIL_FROM).send(Message(to="b@example.com", subject="S", text="t"))

    assert smtp_server.received.logins[-1] == (USER.encode(), PASSWORD.encode())
    [received] = smtp_server.received.messages
    assert (received["To"], received["Subject"]) == ("b@example.com", "S")


async def test_wrong_password_is_a_delivery_error(smtp_server: SmtpServer) -> None:
    url = f"smtp://mailer%40example.org:wrong@127.0.0.1:{smtp_server.port}"

    with pytest.raises(MailDeliveryError, match=f"127.0.0.1:{smtp_server.port}") as caught:
        await backend_from_url(url, MAIL_FROM).send(
            Message(to="b@example.com", subject="S", text="t")
        )

    assert isinstance(caught.value.__cause__, aiosmtplib.SMTPAuthenticationError)
    assert "wrong" not in caught.value.message
    assert smtp_server.received.messages == []


async def test_required_starttls_is_not_skipped(smtp_server: SmtpServer) -> None:
    url = f"smtp+starttls://{QUOTED_CREDENTIALS}@127.0.0.1:{smtp_server.port}"

    with pytest.raises(MailDeliveryError) as caught:
        await backend_from_url(url, MAIL_FROM).send(
            Message(to="b@example.com", subject="S", text="t")
        )

    assert "STARTTLS" in str(caught.value.__cause__)
    assert smtp_server.received.logins == []
    assert smtp_server.received.messages == []


async def test_refused_connection_is_a_delivery_error() -> None:
    backend = backend_from_url(f"smtp://127.0.0.1:{_free_port()}?timeout=2", MAIL_FROM)

    with pytest.raises(MailDeliveryError):
        await backend.send(Message(to="b@example.com", subject="S", text="t"))


async def test_silent_server_times_out(silent_server: int) -> None:
    backend = backend_from_url(f"smtp://127.0.0.1:{silent_server}?timeout=0.2", MAIL_FROM)

    async with asyncio.timeout(5):
        with pytest.raises(MailDeliveryError):
            await backend.send(Message(to="b@example.com", subject="S", text="t"))


def test_url_schemes_choose_port_and_tls() -> None:
    plain = SmtpConfig.from_url(f"smtp://{QUOTED_CREDENTIALS}@mail.example.org:2525")
    starttls = SmtpConfig.from_url("smtp+starttls://mail.example.org")
    implicit = SmtpConfig.from_url("SMTPS://mail.example.org/?timeout=3.5")

    assert plain == SmtpConfig("mail.example.org", 2525, USER, PASSWORD, False, None, 10.0)
    assert (starttls.port, starttls.use_tls, starttls.start_tls) == (587, False, True)
    assert (implicit.port, implicit.use_tls, implicit.start_tls) == (465, True, None)
    assert implicit.timeout == 3.5
    assert SmtpConfig.from_url("smtp://relay").port == 25


def test_password_is_not_in_the_repr() -> None:
    config = SmtpConfig.from_url(f"smtp://{QUOTED_CREDENTIALS}@mail.example.org")

    assert PASSWORD not in repr(config)
    assert "p%40ss" not in repr(config)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("smtp://", "needs a host"),
        ("smtp://host:99999", "invalid port"),
        ("smtp://host:abc", "invalid port"),
        ("smtp://host/path", "no path"),
        ("smtp://host?starttls=true", "unknown parameters: starttls"),
        ("smtp://host?timeout=0", "positive number"),
        ("smtp://host?timeout=soon", "positive number"),
    ],
)
def test_bad_smtp_url_is_a_configuration_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        backend_from_url(url, MAIL_FROM)
