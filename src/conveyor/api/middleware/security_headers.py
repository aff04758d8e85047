"""`X-Content-Type-Options: nosniff` on every answer of the app."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = (b"x-content-type-options", b"nosniff")


class NoSniff:
    """Browsers must take a JSON answer for the JSON it says it is, never guess HTML or a
    script from its content (an error echoing input would otherwise be one way in). Answers
    that already say it (the dashboard's) are left alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == NOSNIFF[0] for name, _ in headers):
                    message["headers"] = [*headers, NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_nosniff)
