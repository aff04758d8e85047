"""`X-Content-Type-Options: nosniff` on every answer of the app (added by `edge.RequestEdge`)."""

from __future__ import annotations

from typing import Any

NOSNIFF = (b"x-content-type-options", b"nosniff")


def with_nosniff(headers: list[Any]) -> list[Any]:
    """Browsers must take a JSON answer for the JSON it says it is, never guess HTML or a
    script from its content (an error echoing input would otherwise be one way in). Answers
    that already say it (the dashboard's) are left alone."""
    if any(name.lower() == NOSNIFF[0] for name, _ in headers):
        return headers
    return [*headers, NOSNIFF]
