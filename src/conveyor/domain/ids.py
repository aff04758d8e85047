"""Time-ordered job ids (UUIDv7, RFC 9562), so ids sort by creation time."""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A UUIDv7 string; ids made in the same millisecond in one process stay ordered."""
    ms, counter = _stamp()
    return _text(ms, counter, int.from_bytes(os.urandom(8), "big"))


def uuid7_many(n: int) -> list[str]:
    """`n` UUIDv7 strings, in order, as `n` calls of `uuid7` would make them, with one read
    of the random source for all (a batch submit's 500 reads were a tenth of its ids' cost)."""
    noise = os.urandom(8 * n)
    return [_text(*_stamp(), int.from_bytes(noise[8 * i : 8 * i + 8], "big")) for i in range(n)]


def _stamp() -> tuple[int, int]:
    """The next (millisecond, counter): later than every one this process made before."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # 4096 ids in one ms: borrow the next millisecond
                ms += 1
                _counter = 0
        else:
            _counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
        _last_ms = ms
        return ms, _counter


def _text(ms: int, counter: int, noise: int) -> str:
    rand = noise & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    # str(uuid.UUID(int=value)), without building the object: half the cost of an id, and
    # a batch of 500 jobs makes 500 of them.
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
