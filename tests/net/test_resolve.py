"""The address check over literal and resolved hosts; pure, with an injected resolver."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from conveyor.net import BlockedUrl, FetchFailed, FetchPolicy
from conveyor.net.resolve import checked_addresses, system_resolver
from conveyor.net.urls import check_url
from tests.net.world import PUBLIC, FakeDns

STRICT = FetchPolicy()
OPEN = FetchPolicy(allow_private=True, ports=None)


async def never(host: str, port: int) -> Sequence[str]:
    raise AssertionError("a literal host must not be resolved")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::1]/",
        "http://0/",
        "http://169.254.169.254/",
        "http://0xa9fea9fe/",
        "http://10.1/",
        "http://192.168.0.1./",
        "http://[fe80::1%25eth0]/",
        "http://100.64.0.1/",
        "http://[fd00:ec2::254]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
    ],
)
async def test_literal_hosts_in_every_spelling_are_refused_without_a_lookup(url: str) -> None:
    target = check_url(url, STRICT)
    with pytest.raises(BlockedUrl, match=r"address .* is ") as caught:
        await checked_addresses(target, STRICT, never)
    assert caught.value.details["reason"] == "address"


async def test_a_public_literal_is_its_own_pin() -> None:
    target = check_url("http://0x5db8d822/", STRICT)
    assert await checked_addresses(target, STRICT, never) == (PUBLIC,)


async def test_every_answer_is_checked_and_the_pin_keeps_their_order() -> None:
    dns = FakeDns({"two.test": [["2606:4700::1", PUBLIC, PUBLIC]]})
    target = check_url("http://two.test/", STRICT)
    assert await checked_addresses(target, STRICT, dns) == ("2606:4700::1", PUBLIC)


@pytest.mark.parametrize("bad", ["127.0.0.1", "10.0.0.1", "::ffff:93.184.216.34", "fe80::1"])
async def test_one_bad_answer_refuses_the_name(bad: str) -> None:
    dns = FakeDns({"mixed.test": [[PUBLIC, bad]]})
    with pytest.raises(BlockedUrl, match=r"mixed\.test"):
        await checked_addresses(check_url("http://mixed.test/", STRICT), STRICT, dns)


async def test_allow_private_lifts_the_address_check() -> None:
    dns = FakeDns({"lan.test": [["10.0.0.1"]]})
    target = check_url("http://lan.test:8080/", OPEN)
    assert await checked_addresses(target, OPEN, dns) == ("10.0.0.1",)
    assert await checked_addresses(check_url("http://127.1/", OPEN), OPEN, never) == ("127.0.0.1",)


async def test_resolver_failures() -> None:
    dns = FakeDns({"empty.test": [[]], "junk.test": [["not-an-address"]]})
    with pytest.raises(FetchFailed, match="could not resolve"):
        await checked_addresses(check_url("http://gone.test/", STRICT), STRICT, dns)
    with pytest.raises(FetchFailed, match="no address"):
        await checked_addresses(check_url("http://empty.test/", STRICT), STRICT, dns)
    with pytest.raises(BlockedUrl, match="non-address"):
        await checked_addresses(check_url("http://junk.test/", STRICT), STRICT, dns)


async def test_the_system_resolver_answers_addresses() -> None:
    answers = await system_resolver("localhost", 80)
    assert "127.0.0.1" in answers
