"""URL-level refusals: scheme, credentials, port, host syntax; pure, no network."""

from __future__ import annotations

import pytest

from conveyor.net import BlockedUrl, FetchPolicy
from conveyor.net.urls import check_url, origin, parse_url

STRICT = FetchPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/",
        "data:text/plain,hi",
        "javascript:alert(1)",
        "dict://example.com:11211/",
        "ws://example.com/",
        "//example.com/",
    ],
)
def test_only_http_and_https_are_allowed(url: str) -> None:
    with pytest.raises(BlockedUrl, match="only http and https") as caught:
        check_url(url, STRICT)
    assert caught.value.code == "blocked_url"


def test_credentials_in_the_url_are_refused_without_being_echoed() -> None:
    with pytest.raises(BlockedUrl, match="credentials") as caught:
        check_url("http://admin:hunter2@example.com/?token=abc", STRICT)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value.details)
    assert "token" not in str(caught.value)


def test_credentials_pass_when_allowed() -> None:
    target = check_url("http://admin:hunter2@example.com/", FetchPolicy(allow_userinfo=True))
    assert target.host == "example.com"


@pytest.mark.parametrize(
    "url", ["http://example.com:8080/", "https://example.com:22/", "http://example.com:6379/"]
)
def test_only_the_allowed_ports(url: str) -> None:
    with pytest.raises(BlockedUrl, match=r"port .* is not allowed"):
        check_url(url, STRICT)


@pytest.mark.parametrize(
    ("url", "port"),
    [("http://example.com/", 80), ("https://example.com/", 443), ("http://example.com:443/", 443)],
)
def test_default_ports_are_filled_in(url: str, port: int) -> None:
    assert check_url(url, STRICT).port == port


def test_any_port_when_ports_is_none() -> None:
    assert check_url("http://example.com:8080/", FetchPolicy(ports=None)).port == 8080


@pytest.mark.parametrize("url", ["http://example.com:0/", "http://example.com:99999/"])
def test_a_port_out_of_range_is_refused_even_when_any_port_is_allowed(url: str) -> None:
    with pytest.raises(BlockedUrl):
        check_url(url, FetchPolicy(ports=None))


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http:///path",
        "http://1.2.3.4.5/",
        "http://a..b/",
        "http://exa mple.com/",
        "http://0177.0.0.1/",
        "http://[::g]/",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
        "not a url at all",
    ],
)
def test_malformed_hosts_are_refused(url: str) -> None:
    with pytest.raises(BlockedUrl):
        check_url(url, STRICT)


@pytest.mark.parametrize(
    ("url", "host", "literal"),
    [
        ("http://127.1/", "127.1", "127.0.0.1"),
        ("http://0x7f000001/", "0x7f000001", "127.0.0.1"),
        ("http://2130706433/", "2130706433", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("http://münchen.de/", "xn--mnchen-3ya.de", None),
        ("HTTP://EXAMPLE.COM/", "example.com", None),
    ],
)
def test_the_target_is_what_the_http_layer_dials(url: str, host: str, literal: str | None) -> None:
    target = check_url(url, STRICT)
    assert target.host == host
    assert (str(target.literal) if target.literal else None) == literal


def test_origin_leaves_out_credentials_path_and_query() -> None:
    url = parse_url("https://u:p@[2001:db8::1]:8443/a?secret=1#f")
    assert origin(url) == "https://[2001:db8::1]:8443"
