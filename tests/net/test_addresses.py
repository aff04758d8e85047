"""Host spellings and the public-address rule; pure, no network."""

from __future__ import annotations

import ipaddress

import pytest

from conveyor.net.addresses import is_public, parse_host, parse_ipv4, refusal_reason

SPELLINGS = [
    ("127.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F000001", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0x7f.0.0.0x1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0177.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),
    ("012.1", "10.0.0.1"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("2852039166", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("::ffff:7f00:1", "::ffff:7f00:1"),
    ("[0:0:0:0:0:ffff:7f00:0001]", "::ffff:7f00:1"),
    ("[::1]", "::1"),
    ("[0:0:0:0:0:0:0:1]", "::1"),
    ("[fe80::1%25eth0]", "fe80::1%eth0"),
]


@pytest.mark.parametrize(("spelling", "address"), SPELLINGS)
def test_every_spelling_reads_as_the_resolver_would(spelling: str, address: str) -> None:
    assert str(parse_host(spelling)) == address


REFUSED = [
    ("127.0.0.1", "loopback"),
    ("0.0.0.0", "this network"),
    ("0.1.2.3", "this network"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"),
    ("100.64.0.1", "shared address space"),
    ("100.100.100.200", "shared address space"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped"),
    ("::ffff:8.8.8.8", "IPv4-mapped"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64"),
    ("fc00::1", "unique local"),
    ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "zone id"),
    ("2606:4700::1%eth0", "zone id"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:2::1", "IETF"),
    ("2002:7f00:1::1", "6to4"),
    ("3fff::1", "documentation"),
    ("100::1", "not global unicast"),
    ("fec0::1", "not global unicast"),
]


@pytest.mark.parametrize(("text", "why"), REFUSED)
def test_non_public_addresses_are_refused_with_a_reason(text: str, why: str) -> None:
    address = ipaddress.ip_address(text)
    reason = refusal_reason(address)
    assert reason is not None
    assert why.lower() in reason.lower()
    assert not is_public(address)


@pytest.mark.parametrize(("spelling", "address"), SPELLINGS)
def test_every_loopback_spelling_is_refused(spelling: str, address: str) -> None:
    parsed = parse_host(spelling)
    assert parsed is not None
    assert not is_public(parsed)


@pytest.mark.parametrize(
    "text",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001:82a::200e",
        "2001:4860:4860::8888",
    ],
)
def test_public_addresses_pass(text: str) -> None:
    assert refusal_reason(ipaddress.ip_address(text)) is None


@pytest.mark.parametrize(
    "name",
    [
        "example.com",
        "public.test",
        "xn--mnchen-3ya.de",
        "0x7f.example",
        "127.0.0.1.nip.io",
        "a1",
        "0x1g",
        "EXAMPLE.COM.",
        "under_score.example",
    ],
)
def test_dns_names_are_not_addresses(name: str) -> None:
    assert parse_host(name) is None


@pytest.mark.parametrize(
    "host",
    [
        "1.2.3.4.5",
        "256.0.0.1",
        "1.256.0.1",
        "08",
        "1.09",
        "4294967296",
        "1.16777216",
        "example.123",
        "[::g]",
        "[1.2.3.4]",
        "1::2::3",
        "",
        ".",
        "a b",
        "ex%41mple",
        "a..b",
    ],
)
def test_hosts_that_are_neither_a_name_nor_an_address_are_errors(host: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_host(host)


def test_parse_ipv4_takes_only_inet_aton_forms() -> None:
    assert parse_ipv4("1.2.3.4") == ipaddress.IPv4Address("1.2.3.4")
    assert parse_ipv4("255.255.65535") == ipaddress.IPv4Address("255.255.255.255")
    for text in ["", "1.", "+1", "-1", " 1", "1_0", "0_7", "0x1_f", "١٢٧.0.0.1", "1.2.3.4.5"]:
        assert parse_ipv4(text) is None, text
