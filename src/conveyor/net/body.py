"""Read a response body under a byte cap that counts what arrives, not what was announced."""

from __future__ import annotations

from collections.abc import AsyncIterable

from conveyor.net.errors import TooLarge


async def read_capped(
    chunks: AsyncIterable[bytes], max_bytes: int, *, declared: str | None = None
) -> bytes:
    """The whole body, or TooLarge as soon as it passes ``max_bytes``.

    A declared ``Content-Length`` over the cap fails before reading anything; one under it
    (true or not) changes nothing, since the count is of bytes actually received, chunked
    or read-until-close bodies included.
    """
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"the body is {int(declared)} bytes; at most {max_bytes} are allowed")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(f"the body is over {max_bytes} bytes")
    return bytes(body)
