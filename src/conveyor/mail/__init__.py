"""Outgoing e-mail: one Message type and interchangeable backends chosen by ``MAIL_URL``."""

from __future__ import annotations

from conveyor.mail.backends import MailBackend, backend_from_url
from conveyor.mail.errors import MailDeliveryError
from conveyor.mail.message import Message

__all__ = ["MailBackend", "MailDeliveryError", "Message", "backend_from_url"]
