"""The next request after a redirect: where it goes, with which method, body and headers.

Only the rewriting lives here; the fetcher runs every check again on the new URL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import httpx

from conveyor.net.errors import BlockedUrl

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
BODY_HEADERS = ("content-type", "content-encoding", "content-language")


@dataclass(frozen=True)
class Outgoing:
    """One request as it will be sent (the fetcher adds ``Host`` per hop)."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    content: bytes | None = None


def redirected(request: Outgoing, status: int, location: str) -> Outgoing:
    """The request that follows a ``status`` redirect to ``location``.

    As browsers and httpx do: 303 becomes GET (HEAD stays HEAD), and so does a POST after
    301 or 302, dropping the body. Credentials do not follow a change of origin, so a
    redirect cannot carry an Authorization header to another host.
    """
    try:
        url = request.url.join(location)
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise BlockedUrl("the redirect location is not a valid URL") from exc
    headers = httpx.Headers(request.headers)
    if _same_origin(url, request.url):
        next_request = replace(request, url=url, headers=headers)
    else:
        next_request = replace(request, url=url, headers=_without(headers, CREDENTIAL_HEADERS))
    method = _method_after(status, request.method)
    if method == request.method:
        return next_request
    return replace(
        next_request,
        method=method,
        content=None,
        headers=_without(next_request.headers, BODY_HEADERS),
    )


def _method_after(status: int, method: str) -> str:
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method


def _same_origin(first: httpx.URL, second: httpx.URL) -> bool:
    return _origin_key(first) == _origin_key(second)


def _origin_key(url: httpx.URL) -> tuple[str, bytes, int | None]:
    return url.scheme, url.raw_host, url.port


def _without(headers: httpx.Headers, names: tuple[str, ...]) -> httpx.Headers:
    kept = httpx.Headers(headers)
    for name in names:
        kept.pop(name, None)
    return kept
