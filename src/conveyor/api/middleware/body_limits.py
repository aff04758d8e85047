"""Body size and JSON depth caps, and NUL characters refused, before any handler parses."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.errors import error_body


class BodyLimits:
    """Refuse, before any handler parses them: bodies over `max_bytes` (413, whatever
    Content-Length claims), JSON nested deeper than `max_depth`, JSON's non-standard NaN and
    Infinity, and NUL characters in the path, the query or JSON strings (422). NUL is refused
    by PostgreSQL text and accepted by SQLite; refusing it here keeps both alike."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _has_nul(scope):
            await _reply(send, 422, "invalid_input", "NUL characters are not allowed")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        try:
            body = await _read(receive, self.max_bytes)
        except _ClientGone:  # a truncated body must not reach a handler as if it were whole
            return
        if body is None:
            await _reply(send, 413, "payload_too_large", f"the body is over {self.max_bytes} bytes")
            return
        problem = _json_problem(body, self.max_depth) if _is_json(scope) else None
        if problem:
            await _reply(send, 422, *problem)
            return
        await self.app(scope, _replay(body), send)


class _ClientGone(Exception):
    """The client went away (or was cut off for sending too slowly) before the body ended."""


async def _read(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as it passes `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


def _json_problem(body: bytes, max_depth: int) -> tuple[str, str] | None:
    """(code, message) of what is wrong with a JSON body, if anything."""
    if _too_deep(body, max_depth):
        return "too_deep", f"JSON nested deeper than {max_depth} levels"
    suspicious = b"NaN" in body or b"Infinity" in body or b"\\u0000" in body
    if not suspicious:
        return None
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except _Constant:
        return "invalid_input", "NaN and Infinity are not valid JSON numbers"
    except ValueError:
        return None  # not JSON at all: the route answers that
    return ("invalid_input", "NUL characters are not allowed") if _contains_nul(value) else None


class _Constant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _is_json(scope: Scope) -> bool:
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    return b"json" in content_type or not content_type


# A JSON string as `_too_deep` reads one: from a quote to the next unescaped quote (a
# backslash escapes the byte after it), or to the end of the body when it is never closed.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
# Every bracket as "(" or ")", every other byte deleted (bytes.translate's two arguments).
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def _too_deep(body: bytes, limit: int) -> bool:
    """Nesting depth outside strings; quick exit when there are not even `limit` brackets.

    The strings are cut out and the other bytes but brackets deleted by the regex and
    `bytes.translate` (C), so the counting loop sees the brackets only: a 500-job batch's
    ~9 KB body is ~1,000 of them (the loop over every byte took ~1 ms a request)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(_BRACKETS, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte == 0x28:  # "(": an opening bracket
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
