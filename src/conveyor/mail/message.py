"""The e-mail a backend sends, and its standard MIME form."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from conveyor.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Message:
    """One e-mail to one recipient; ``sender`` defaults to the backend's ``MAIL_FROM``."""

    to: str
    subject: str
    text: str
    html: str | None = None
    sender: str | None = None

    def __post_init__(self) -> None:
        # Refuse header injection here with a clear error rather than deep in a backend.
        for name in ("to", "subject", "sender"):
            value = getattr(self, name)
            if value is not None and ("\r" in value or "\n" in value):
                raise InvalidInput(f"The mail {name} must be a single line.", field=name)
        if not self.to.strip():
            raise InvalidInput("The mail needs a recipient.", field="to")

    def to_email(self, default_sender: str, message_id: str) -> EmailMessage:
        """The MIME message: plain text, plus an HTML alternative when ``html`` is set."""
        mime = EmailMessage()
        mime["From"] = self.sender or default_sender
        mime["To"] = self.to
        mime["Subject"] = self.subject
        mime["Date"] = formatdate(localtime=False, usegmt=True)
        mime["Message-ID"] = message_id
        mime.set_content(self.text)
        if self.html is not None:
            mime.add_alternative(self.html, subtype="html")
        return mime


def new_message_id(sender: str) -> str:
    """A unique ``<...@domain>`` Message-ID in the sender's domain; ``send`` returns it."""
    _, address = parseaddr(sender)
    _, at, domain = address.rpartition("@")
    return make_msgid(domain=domain if at and domain else "conveyor.local")
