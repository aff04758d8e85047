from __future__ import annotations

import re

import pytest

from conveyor.auth.api_keys import generate, hash_key, looks_like_api_key, verify_key


def test_generated_key_has_prefix_display_part_and_hash() -> None:
    key = generate()

    assert key.plaintext.startswith("cvk_")
    assert looks_like_api_key(key.plaintext)
    assert key.plaintext.startswith(key.display_prefix)
    assert len(key.display_prefix) == 12
    assert key.key_hash == hash_key(key.plaintext)
    assert re.fullmatch(r"[0-9a-f]{64}", key.key_hash)
    assert key.plaintext not in key.key_hash


def test_generated_keys_unpack_as_a_tuple_and_differ() -> None:
    plaintext, _, key_hash = generate()
    other = generate()

    assert other.plaintext != plaintext
    assert other.key_hash != key_hash


def test_verify_key_matches_only_its_own_hash() -> None:
    key = generate()

    assert verify_key(key.plaintext, key.key_hash)
    assert not verify_key(generate().plaintext, key.key_hash)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "cvk_",
        "cvk_short",
        "cvk_" + "a" * 42 + "!",
        "cvk_" + "a" * 44,
        "xyz_" + "a" * 43,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ],
)
def test_other_strings_do_not_look_like_keys(value: str) -> None:
    assert not looks_like_api_key(value)
