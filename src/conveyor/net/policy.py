"""What one fetch may do: where it may go, how long it may take, how much it may read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.settings import Settings

WEB_PORTS = frozenset({80, 443})
MiB = 1024 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    """The limits every outbound request runs under; the defaults are the safe ones.

    ``allow_private`` lifts the address check only; ``ports=None`` allows any port. Build the
    policy for a running service with ``from_settings`` so ``CONVEYOR_ALLOW_PRIVATE_URLS``
    is honoured in one place.
    """

    allow_private: bool = False
    ports: frozenset[int] | None = field(default=WEB_PORTS)
    allow_userinfo: bool = False
    max_bytes: int = 10 * MiB
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 30.0
    max_redirects: int = 3
    user_agent: str = "Conveyor/0.1"

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        """The service's policy. Private URLs are a development and test switch: servers
        on loopback listen on any port, so allowing them lifts the port check as well."""
        if settings.allow_private_urls:
            return cls(allow_private=True, ports=None)
        return cls()
