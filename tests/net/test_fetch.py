"""The fetcher end to end: a real HTTP exchange on loopback, behind a fake DNS and internet.

The policy is the strict default (public addresses, ports 80/443): the fake internet routes
two public addresses to the loopback server, so what the guard refuses and where the socket
went are both visible.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from conveyor.net import BlockedUrl, FetchFailed, FetchPolicy, FetchResult, TooLarge, fetch
from tests.net.world import PUBLIC, FakeDns, FakeInternet, LoopbackServer, free_port


@pytest.fixture
def get(policy: FetchPolicy, dns: FakeDns, internet: FakeInternet) -> Any:
    """``fetch`` through the fake DNS and internet, under ``policy`` unless told otherwise."""

    async def call(url: str, **kwargs: Any) -> FetchResult:
        kwargs.setdefault("policy", policy)
        return await fetch(url, resolver=dns, network=internet, **kwargs)

    return call


def echoed(result: FetchResult) -> dict[str, Any]:
    described: dict[str, Any] = json.loads(result.body)
    return described


async def test_fetches_a_small_body_from_the_checked_address(
    get: Any, internet: FakeInternet, server: LoopbackServer
) -> None:
    result = await get("http://public.test/small")
    assert (result.status, result.body, result.address) == (200, b"hello", PUBLIC)
    assert result.url == "http://public.test/small"
    assert internet.dialed == [(PUBLIC, 80)]
    assert server.seen[0].headers["host"] == "public.test"


async def test_sends_identity_encoding_and_the_user_agent_and_ignores_a_forged_host(
    get: Any,
) -> None:
    result = await get("http://public.test/echo", headers={"Host": "internal", "X-Id": "7"})
    headers = echoed(result)["headers"]
    assert headers["host"] == "public.test"
    assert headers["user-agent"] == "Conveyor/0.1"
    assert headers["accept-encoding"] == "identity"
    assert headers["x-id"] == "7"


async def test_a_rebinding_name_is_resolved_once_and_the_checked_address_is_dialled(
    get: Any, dns: FakeDns, internet: FakeInternet
) -> None:
    dns.answers["public.test"] = [[PUBLIC], ["127.0.0.1"]]
    result = await get("http://public.test/small")
    assert result.body == b"hello"
    assert dns.calls == ["public.test"]
    assert internet.dialed == [(PUBLIC, 80)]


async def test_every_redirect_hop_is_resolved_and_checked_again(
    get: Any, dns: FakeDns, internet: FakeInternet
) -> None:
    dns.answers["public.test"] = [[PUBLIC], ["127.0.0.1"]]
    with pytest.raises(BlockedUrl, match=r"127\.0\.0\.1 is loopback"):
        await get("http://public.test/redirect/302?to=/small")
    assert dns.calls == ["public.test", "public.test"]
    assert internet.dialed == [(PUBLIC, 80)]


async def test_a_name_with_any_private_answer_is_refused_before_dialling(
    get: Any, dns: FakeDns, internet: FakeInternet
) -> None:
    dns.answers["public.test"] = [[PUBLIC, "10.1.2.3"]]
    with pytest.raises(BlockedUrl, match=r"10\.1\.2\.3 is private"):
        await get("http://public.test/small")
    assert internet.dialed == []


async def test_follows_three_redirects(get: Any, server: LoopbackServer) -> None:
    result = await get("http://public.test/hops/3")
    assert (result.status, result.body, result.url) == (
        200,
        b"arrived",
        "http://public.test/hops/0",
    )
    assert len(server.seen) == 4


async def test_refuses_a_fourth_redirect(get: Any, server: LoopbackServer) -> None:
    with pytest.raises(FetchFailed, match="more than 3 redirects") as caught:
        await get("http://public.test/hops/4")
    assert caught.value.details["reason"] == "redirects"
    assert len(server.seen) == 4


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1/small",
        "http://127.1/small",
        "http://2130706433/small",
        "http://[::ffff:127.0.0.1]/small",
        "http://169.254.169.254/latest/meta-data/",
        "http://internal.test/small",
        "http://0177.0.0.1/small",
        "http://[fe80::1%25eth0]/small",
        "http://public.test:8080/small",
        "http://user:secret@public.test/small",
        "file:///etc/passwd",
        "gopher://public.test/",
        "ftp://public.test/",
    ],
)
async def test_a_redirect_to_a_refused_url_is_refused(
    get: Any, internet: FakeInternet, location: str
) -> None:
    with pytest.raises(BlockedUrl) as caught:
        await get(f"http://public.test/redirect/302?to={location}")
    assert "secret" not in str(caught.value)
    assert internet.dialed == [(PUBLIC, 80)]


async def test_303_turns_a_post_into_a_get_without_the_body(get: Any) -> None:
    result = await get(
        "http://public.test/redirect/303?to=/echo",
        method="POST",
        content=b"payload",
        headers={"Content-Type": "text/plain"},
    )
    seen = echoed(result)
    assert (seen["method"], seen["body"]) == ("GET", "")
    assert "content-type" not in seen["headers"]


async def test_307_keeps_the_method_and_the_body(get: Any) -> None:
    result = await get("http://public.test/redirect/307?to=/echo", method="POST", content=b"hi")
    assert (echoed(result)["method"], echoed(result)["body"]) == ("POST", "hi")


async def test_credentials_do_not_follow_a_redirect_to_another_origin(get: Any) -> None:
    secret = {"Authorization": "Bearer s3cret", "Cookie": "session=1"}
    same = await get("http://public.test/redirect/302?to=/echo", headers=secret)
    other = await get("http://public.test/redirect/302?to=http://other.test/echo", headers=secret)
    assert echoed(same)["headers"]["authorization"] == "Bearer s3cret"
    assert "authorization" not in echoed(other)["headers"]
    assert "cookie" not in echoed(other)["headers"]


async def test_userinfo_becomes_basic_auth_only_when_allowed(get: Any, policy: FetchPolicy) -> None:
    result = await get("http://me:pw@public.test/echo", policy=replace(policy, allow_userinfo=True))
    assert echoed(result)["headers"]["authorization"] == "Basic bWU6cHc="


async def test_a_non_2xx_status_is_returned_not_raised(get: Any) -> None:
    result = await get("http://public.test/status/404")
    assert (result.status, result.body) == (404, b"status page")
    with pytest.raises(FetchFailed, match="answered 404") as caught:
        result.raise_for_status()
    assert caught.value.details == {"status": 404}
    ok = await get("http://public.test/small")
    assert ok.raise_for_status() is ok


@pytest.mark.parametrize("path", ["/until-close", "/chunked"])
async def test_a_body_over_the_cap_is_refused_whatever_its_framing(
    get: Any, policy: FetchPolicy, path: str
) -> None:
    with pytest.raises(TooLarge):
        await get(f"http://public.test{path}", policy=replace(policy, max_bytes=100_000))


async def test_a_lying_content_length_cannot_deliver_more_than_it_declared(get: Any) -> None:
    result = await get("http://public.test/lying-length")
    assert result.body == b"x" * 10


async def test_the_cap_is_inclusive(get: Any, policy: FetchPolicy) -> None:
    assert (await get("http://public.test/small", policy=replace(policy, max_bytes=5))).body
    with pytest.raises(TooLarge):
        await get("http://public.test/small", policy=replace(policy, max_bytes=4))


async def test_a_stalled_body_hits_the_read_timeout(get: Any, policy: FetchPolicy) -> None:
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out"):
        await get("http://public.test/slow-body", policy=replace(policy, read_timeout=0.2))
    assert time.monotonic() - started < 1.5


async def test_a_dripping_body_hits_the_total_timeout(get: Any, policy: FetchPolicy) -> None:
    started = time.monotonic()
    with pytest.raises(FetchFailed, match=r"gave up after 0\.4 s") as caught:
        await get("http://public.test/drip", policy=replace(policy, total_timeout=0.4))
    assert caught.value.details["reason"] == "timeout"
    assert time.monotonic() - started < 1.5


async def test_a_hanging_resolver_hits_the_connect_timeout(
    internet: FakeInternet, policy: FetchPolicy
) -> None:
    async def hang(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(30)
        return []

    with pytest.raises(FetchFailed, match="name resolution timed out"):
        await fetch(
            "http://public.test/",
            policy=replace(policy, connect_timeout=0.2),
            resolver=hang,
            network=internet,
        )


async def test_an_unknown_name_fails(get: Any) -> None:
    with pytest.raises(FetchFailed, match="could not resolve"):
        await get("http://nowhere.test/")


async def test_an_unrouted_public_address_fails(get: Any, dns: FakeDns) -> None:
    dns.answers["public.test"] = [["1.1.1.1"]]
    with pytest.raises(FetchFailed, match="no route"):
        await get("http://public.test/")


async def test_a_refused_port_fails() -> None:
    with pytest.raises(FetchFailed):
        await fetch(
            f"http://127.0.0.1:{free_port()}/",
            policy=FetchPolicy(allow_private=True, ports=None, total_timeout=3),
        )


async def test_the_system_resolver_refuses_localhost() -> None:
    with pytest.raises(BlockedUrl, match="is loopback"):
        await fetch("http://localhost/", policy=FetchPolicy(total_timeout=3))


async def test_allow_private_reaches_a_loopback_server_by_name(server: LoopbackServer) -> None:
    """localhost may answer ::1 first; the pin then falls back to its next checked address."""
    result = await fetch(
        f"http://localhost:{server.port}/small",
        policy=FetchPolicy(allow_private=True, ports=None, total_timeout=3),
    )
    assert (result.body, result.address) == (b"hello", "127.0.0.1")


async def test_a_literal_host_never_reaches_the_resolver(policy: FetchPolicy) -> None:
    async def forbidden(host: str, port: int) -> Sequence[str]:
        raise AssertionError("a literal host was resolved")

    with pytest.raises(BlockedUrl, match="is loopback"):
        await fetch("http://0x7f.1/", policy=policy, resolver=forbidden)


async def test_a_failing_resolver_is_a_fetch_failure(
    policy: FetchPolicy,
) -> None:
    async def broken(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(FetchFailed, match="could not resolve"):
        await fetch("http://public.test/", policy=policy, resolver=broken)
