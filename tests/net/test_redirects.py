"""How a request is rewritten by a redirect; pure."""

from __future__ import annotations

import httpx
import pytest

from conveyor.net import BlockedUrl
from conveyor.net.redirects import Outgoing, redirected

HEADERS = {
    "Authorization": "Bearer t",
    "Cookie": "a=1",
    "Content-Type": "application/json",
    "X-Trace": "1",
}


def post(url: str = "https://a.test/start") -> Outgoing:
    return Outgoing("POST", httpx.URL(url), httpx.Headers(HEADERS), b"{}")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/next", "https://a.test/next"),
        ("next", "https://a.test/next"),
        ("//b.test/x", "https://b.test/x"),
        ("http://c.test:8080/y?z=1", "http://c.test:8080/y?z=1"),
    ],
)
def test_locations_are_resolved_against_the_current_url(location: str, expected: str) -> None:
    assert str(redirected(post(), 307, location).url) == expected


@pytest.mark.parametrize(
    ("method", "status", "after"),
    [
        ("POST", 303, "GET"),
        ("PUT", 303, "GET"),
        ("HEAD", 303, "HEAD"),
        ("POST", 301, "GET"),
        ("POST", 302, "GET"),
        ("PUT", 302, "PUT"),
        ("POST", 307, "POST"),
        ("POST", 308, "POST"),
    ],
)
def test_the_method_after_a_redirect(method: str, status: int, after: str) -> None:
    request = Outgoing(method, httpx.URL("https://a.test/"), httpx.Headers(HEADERS), b"{}")
    following = redirected(request, status, "/next")
    assert following.method == after
    changed = after != method
    assert (following.content is None) is changed
    assert ("content-type" not in following.headers) is changed


def test_same_origin_keeps_credentials() -> None:
    following = redirected(post(), 307, "/next")
    assert following.headers["authorization"] == "Bearer t"
    assert following.headers["cookie"] == "a=1"


@pytest.mark.parametrize(
    "location", ["https://b.test/", "http://a.test/", "https://a.test:8443/", "//evil.test/"]
)
def test_another_origin_drops_credentials_but_keeps_the_rest(location: str) -> None:
    following = redirected(post(), 307, location)
    assert "authorization" not in following.headers
    assert "cookie" not in following.headers
    assert following.headers["x-trace"] == "1"


def test_the_original_request_is_not_changed() -> None:
    request = post()
    redirected(request, 303, "https://b.test/")
    assert request.headers["authorization"] == "Bearer t"
    assert request.method == "POST"


def test_an_invalid_location_is_refused() -> None:
    with pytest.raises(BlockedUrl, match="not a valid URL"):
        redirected(post(), 302, "http://[::g]/")
