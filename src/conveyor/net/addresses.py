"""Read a URL host the way the OS resolver would, and decide whether an address is public.

``parse_host`` must agree with ``getaddrinfo``: it accepts every form ``inet_aton`` does
(``127.1``, ``0x7f.1``, ``017700000001``, ``2130706433``) so that a numeric host never reaches
the resolver in a spelling we did not check. ``refusal_reason`` is an allow-list in spirit:
IPv6 must be global unicast (``2000::/3``), both families must pass ``ipaddress.is_global``,
and the special-purpose ranges are named explicitly so the answer does not depend on the
Python version's tables.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_OCTAL_DIGITS = frozenset("01234567")
_DNS_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?", re.IGNORECASE)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# First match wins, so the narrow, alarming names come before the ranges that hold them.
_REFUSED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (_V4("169.254.169.254/32"), "the cloud metadata address"),
    (_V6("fd00:ec2::254/128"), "the cloud metadata address"),
    (_V4("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "shared address space (100.64.0.0/10)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved for IETF protocols"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "the 6to4 relay range"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("::ffff:0:0/96"), "IPv4-mapped IPv6"),
    (_V6("::/96"), "IPv4-compatible IPv6"),
    (_V6("64:ff9b::/96"), "NAT64 (embeds an IPv4 address)"),
    (_V6("fc00::/7"), "unique local (private)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("2001::/32"), "Teredo (embeds an IPv4 address)"),
    (_V6("2001::/23"), "reserved for IETF protocols"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2002::/16"), "6to4 (embeds an IPv4 address)"),
    (_V6("3fff::/20"), "documentation"),
)
_GLOBAL_UNICAST_V6 = _V6("2000::/3")


def parse_host(host: str) -> IPAddress | None:
    """The address a literal host names, or None for a DNS name.

    Raises ValueError for a host that is neither: an IPv6 literal that does not parse, or a
    name whose last label is a number (``1.2.3.4.5``, ``256.0.0.1``, ``08``). WHATWG URL parsing
    rejects those too, and handing them to the resolver would let its rules, not ours, decide.
    """
    if host.startswith("[") and host.endswith("]"):
        return _parse_ipv6(host[1:-1])
    if ":" in host:
        return _parse_ipv6(host)
    name = host[:-1] if host.endswith(".") else host
    if not _DNS_NAME.fullmatch(host):
        raise ValueError("not a valid host name")
    if not _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        return None
    address = parse_ipv4(name)
    if address is None:
        raise ValueError("a numeric host that is not a valid IPv4 address")
    return address


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The address in any ``inet_aton`` spelling: 1 to 4 parts, decimal, octal or hex.

    The last part fills the remaining bytes, so ``127.1`` is 127.0.0.1 and ``2130706433``
    is too. Returns None when the text is not such a spelling.
    """
    parts = text.split(".")
    if len(parts) > 4:
        return None
    numbers = [_inet_aton_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    *head, last = [number for number in numbers if number is not None]
    if any(number > 0xFF for number in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for index, number in enumerate(head):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _inet_aton_number(part: str) -> int | None:
    if not _NUMERIC_LABEL.fullmatch(part):
        return None
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if set(part) <= _OCTAL_DIGITS else None
    return int(part)


def _parse_ipv6(text: str) -> ipaddress.IPv6Address:
    """An IPv6 literal, with a URL-encoded zone id (``fe80::1%25eth0``) decoded."""
    return ipaddress.IPv6Address(unquote(text))


def refusal_reason(address: IPAddress) -> str | None:
    """Why a fetch must not connect to ``address``, or None if it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "scoped (has a zone id)"
    for network, reason in _REFUSED:
        if address.version == network.version and address in network:
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "not global unicast"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "reserved"
    if not address.is_global:
        return "not globally reachable"
    return None


def is_public(address: IPAddress) -> bool:
    """True when ``address`` is globally reachable and none of the refused kinds."""
    return refusal_reason(address) is None
