"""The pinned backend dials the checked addresses and nothing else."""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import pytest

from conveyor.net import BlockedUrl
from conveyor.net.pinning import Pin, PinnedBackend


class Recorder(httpcore.AsyncNetworkBackend):
    """Records dials; addresses in ``down`` refuse the connection."""

    def __init__(self, down: Iterable[str] = ()) -> None:
        self.down = set(down)
        self.dialed: list[tuple[str, int, float | None]] = []
        self.slept: list[float] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.dialed.append((host, port, timeout))
        if host in self.down:
            raise httpcore.ConnectError(f"{host} refused")
        return httpcore.AsyncNetworkStream()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


PIN = Pin("public.test", 443, ("2606:4700::1", "93.184.216.34"))


async def test_the_name_is_swapped_for_the_first_checked_address() -> None:
    inner = Recorder()
    backend = PinnedBackend(PIN, inner)
    await backend.connect_tcp("public.test", 443, timeout=2.0)
    assert inner.dialed == [("2606:4700::1", 443, 2.0)]
    assert backend.connected == "2606:4700::1"


async def test_an_unreachable_address_falls_back_to_the_next_checked_one() -> None:
    inner = Recorder(down={"2606:4700::1"})
    backend = PinnedBackend(PIN, inner)
    await backend.connect_tcp("public.test", 443)
    assert [dial[0] for dial in inner.dialed] == ["2606:4700::1", "93.184.216.34"]
    assert backend.connected == "93.184.216.34"


async def test_when_every_address_fails_the_last_error_is_raised() -> None:
    backend = PinnedBackend(PIN, Recorder(down=PIN.addresses))
    with pytest.raises(httpcore.ConnectError, match=r"93\.184\.216\.34 refused"):
        await backend.connect_tcp("public.test", 443)
    assert backend.connected is None


@pytest.mark.parametrize(("host", "port"), [("other.test", 443), ("public.test", 80)])
async def test_any_other_target_is_refused(host: str, port: int) -> None:
    inner = Recorder()
    with pytest.raises(BlockedUrl, match="unchecked host"):
        await PinnedBackend(PIN, inner).connect_tcp(host, port)
    assert inner.dialed == []


async def test_unix_sockets_are_refused_and_sleep_is_delegated() -> None:
    inner = Recorder()
    backend = PinnedBackend(PIN, inner)
    with pytest.raises(BlockedUrl, match="unix"):
        await backend.connect_unix_socket("/var/run/docker.sock")
    await backend.sleep(0.5)
    assert inner.slept == [0.5]
