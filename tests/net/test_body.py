"""The byte cap counts what arrives and stops reading as soon as it is passed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.net import TooLarge
from conveyor.net.body import read_capped


class Chunks:
    """An endless-capable body that counts how much of it was pulled."""

    def __init__(self, size: int, count: int) -> None:
        self.size, self.count, self.pulled = size, count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.pulled += 1
            yield b"x" * self.size


async def test_reads_a_body_up_to_the_cap_inclusive() -> None:
    assert await read_capped(Chunks(10, 3), 30) == b"x" * 30


async def test_stops_at_the_first_chunk_over_the_cap() -> None:
    body = Chunks(10, 1_000_000)
    with pytest.raises(TooLarge, match="over 25 bytes"):
        await read_capped(body, 25)
    assert body.pulled == 3


async def test_an_empty_body() -> None:
    assert await read_capped(Chunks(10, 0), 0) == b""
