"""The JSON depth cap's scan (api/middleware/body_limits.py) on the bodies it must read as
the byte-by-byte scan did: brackets in strings, escaped quotes, a string never closed."""

from __future__ import annotations

import json

import pytest

from conveyor.api.middleware.body_limits import _too_deep


@pytest.mark.parametrize(
    ("body", "limit", "deep"),
    [
        (b"[[[]]]", 3, False),
        (b"[[[[]]]]", 3, True),
        (b'{"a": [{"b": []}]}', 4, False),
        (b'{"a": [{"b": [[]]}]}', 4, True),
        (b'["[[[[[[", "{{{{"]', 1, False),  # brackets in strings are text
        (b'["\\"[[[[", [[]]]', 2, True),  # an escaped quote does not end the string
        (b'["\\\\", [[[]]]]', 3, True),  # an escaped backslash does
        (b'[[ "never closed [[[[[[', 2, False),  # a string runs to the end
        (b'[[ "ends in a backslash \\', 2, False),
        (b"]]]][[[[", 3, False),  # not JSON: counted as before (down, then up to 0)
    ],
)
def test_depth_is_counted_outside_strings(body: bytes, limit: int, deep: bool) -> None:
    assert _too_deep(body, limit) is deep


def test_a_wide_batch_is_not_deep() -> None:
    body = json.dumps({"jobs": [{"type": "noop", "payload": {"s": "[{"}}] * 500}).encode()
    assert not _too_deep(body, 4)
    assert _too_deep(body, 3)
