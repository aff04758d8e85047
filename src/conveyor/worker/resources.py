"""What handlers may use besides their payload: settings, the store, the mail backend."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.mail.backends import MailBackend
from conveyor.settings import Settings
from conveyor.store.backend import QueueBackend


@dataclass(frozen=True)
class Resources:
    """Shared by every job of a worker; given to handlers as `ctx.resources`."""

    settings: Settings
    backend: QueueBackend
    mail: MailBackend
