"""Sending through an SMTP server with aiosmtplib, configured by one URL.

The scheme picks the transport security, so the URL alone says how credentials travel:

- ``smtp://user:pass@host[:25]``: plain connection, upgraded with STARTTLS when the server
  offers it (opportunistic; fine for a relay on the same host or network).
- ``smtp+starttls://user:pass@host[:587]``: STARTTLS is required; the send fails if the
  server does not offer it, so a downgrade cannot expose the password.
- ``smtps://user:pass@host[:465]``: implicit TLS from the first byte.

User and password are percent-decoded (write ``@`` as ``%40``). The only query parameter is
``timeout`` in seconds (default 10), applied to connecting and to each command.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import aiosmtplib

from conveyor.errors import ConfigurationError
from conveyor.mail.errors import MailDeliveryError
from conveyor.mail.message import Message, new_message_id

DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to connect; the password is kept out of ``repr``."""

    hostname: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool | None = None  # None: use STARTTLS if offered; True: require it
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse an ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URL (module docstring)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ConfigurationError(f"MAIL_URL scheme {scheme!r} is not an SMTP scheme.")
        if not parts.hostname:
            raise ConfigurationError("MAIL_URL needs a host, as in smtp://user:pass@host:port.")
        if parts.path not in ("", "/"):
            raise ConfigurationError("MAIL_URL for SMTP takes no path.")
        return cls(
            hostname=parts.hostname,
            port=_port(parts) or DEFAULT_PORTS[scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            use_tls=scheme == "smtps",
            start_tls=True if scheme == "smtp+starttls" else None,
            timeout=_timeout(parts.query),
        )


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise ConfigurationError("MAIL_URL has an invalid port.") from None


def _timeout(query: str) -> float:
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"timeout"}
    if unknown:
        raise ConfigurationError(
            f"MAIL_URL has unknown parameters: {', '.join(sorted(unknown))}; only timeout is "
            "supported (the scheme chooses TLS: smtp+starttls:// or smtps://)."
        )
    if "timeout" not in params:
        return DEFAULT_TIMEOUT
    try:
        timeout = float(params["timeout"][-1])
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        raise ConfigurationError("MAIL_URL timeout must be a positive number of seconds.")
    return timeout


class SmtpBackend:
    """Hands each message to the SMTP server in its own connection."""

    def __init__(
        self, config: SmtpConfig, mail_from: str, *, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.config = config
        self.mail_from = mail_from
        self._tls_context = tls_context

    async def send(self, message: Message) -> str:
        """Send ``message``; raise MailDeliveryError if the server cannot take it now."""
        sender = message.sender or self.mail_from
        message_id = new_message_id(sender)
        config = self.config
        try:
            await aiosmtplib.send(
                message.to_email(sender, message_id),
                hostname=config.hostname,
                port=config.port,
                username=config.username,
                password=config.password,
                use_tls=config.use_tls,
                start_tls=config.start_tls,
                timeout=config.timeout,
                tls_context=self._tls_context,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailDeliveryError(
                f"The SMTP server {config.hostname}:{config.port} did not take the mail: {exc}"
            ) from exc
        return message_id
