"""The backend interface, the console and file backends, and the choice by ``MAIL_URL``."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from conveyor.errors import ConfigurationError
from conveyor.mail.errors import MailDeliveryError
from conveyor.mail.message import Message, new_message_id
from conveyor.mail.smtp import DEFAULT_PORTS, SmtpBackend, SmtpConfig

logger = logging.getLogger("conveyor.mail")


class MailBackend(Protocol):
    async def send(self, message: Message) -> str:
        """Hand ``message`` over for delivery and return its Message-ID."""
        ...


class ConsoleBackend:
    """Writes each message to the log, so a developer can read the code it carries.

    The default, so a fresh install works without a mail server; in production the codes
    it logs are secrets, which is why a real deployment sets an SMTP ``MAIL_URL``.
    """

    def __init__(self, mail_from: str) -> None:
        self.mail_from = mail_from

    async def send(self, message: Message) -> str:
        sender = message.sender or self.mail_from
        message_id = new_message_id(sender)
        logger.info("%s", _render(message, sender, message_id))
        return message_id


def _render(message: Message, sender: str, message_id: str) -> str:
    # Readable rather than MIME: a transfer encoding could hide the code from a reader.
    lines = [
        f"Mail {message_id}",
        f"From: {sender}",
        f"To: {message.to}",
        f"Subject: {message.subject}",
        "",
        message.text,
    ]
    if message.html is not None:
        lines += ["", "--- HTML alternative ---", message.html]
    return "\n".join(lines)


class FileBackend:
    """Writes each message as one ``.eml`` file, named so that the files sort by time."""

    def __init__(self, directory: Path, mail_from: str) -> None:
        self.directory = directory
        self.mail_from = mail_from

    async def send(self, message: Message) -> str:
        sender = message.sender or self.mail_from
        message_id = new_message_id(sender)
        data = message.to_email(sender, message_id).as_bytes()
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            raise MailDeliveryError(f"Could not write the mail to {self.directory}: {exc}") from exc
        return message_id

    def _write(self, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        # Write then rename, so a reader watching the directory never sees half a message.
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(data)
        os.replace(partial, path)
        return path


def backend_from_url(url: str, mail_from: str) -> MailBackend:
    """The backend that ``MAIL_URL`` names: console://, file:///dir or an SMTP URL."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "console":
        return ConsoleBackend(mail_from)
    if scheme == "file":
        return FileBackend(_file_directory(url), mail_from)
    if scheme in DEFAULT_PORTS:
        return SmtpBackend(SmtpConfig.from_url(url), mail_from)
    # Only the scheme is quoted: the rest of the URL may hold a password.
    raise ConfigurationError(
        f"MAIL_URL has an unknown scheme {scheme!r}; use console://, file:///path/to/dir, "
        "smtp://user:pass@host:port, smtp+starttls://... or smtps://...",
        scheme=scheme,
    )


def _file_directory(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(
            "MAIL_URL file:// takes a local path, as in file:///var/mail/conveyor."
        )
    if not parts.path:
        raise ConfigurationError("MAIL_URL file:// needs a directory, as in file:///tmp/mail.")
    return Path(unquote(parts.path))
