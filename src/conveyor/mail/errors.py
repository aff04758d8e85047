"""The one failure a mail backend reports, whatever the transport."""

from __future__ import annotations

from conveyor.errors import Unavailable


class MailDeliveryError(Unavailable):
    """The mail could not be handed over for delivery; sending it again may work."""

    code = "mail_unavailable"
