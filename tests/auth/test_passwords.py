from __future__ import annotations

import gzip
import hashlib
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
from pwdlib.hashers.argon2 import Argon2Hasher

from conveyor.auth import common_passwords_build as build
from conveyor.auth import passwords
from conveyor.auth.errors import PasswordPolicyError
from conveyor.auth.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    check_password_policy,
    common_passwords,
    entries_of,
    hash_password,
    needs_rehash,
    ranked_common_passwords,
    verify_dummy,
    verify_password,
)
from conveyor.errors import InvalidInput


def test_hash_is_argon2id_and_verifies() -> None:
    encoded = hash_password("correct horse battery")

    assert encoded.startswith("$argon2id$")
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("correct horse battery!", encoded)


def test_same_password_hashes_differently_each_time() -> None:
    assert hash_password("same password") != hash_password("same password")


@pytest.mark.parametrize("length", [MIN_LENGTH, MAX_LENGTH])
def test_length_bounds_are_accepted(length: int) -> None:
    password = ("xy" * length)[:length]  # "x" * 8 is a common password
    check_password_policy(password)
    assert verify_password(password, hash_password(password))


@pytest.mark.parametrize("length", [0, MIN_LENGTH - 1, MAX_LENGTH + 1])
def test_lengths_outside_bounds_are_refused(length: int) -> None:
    with pytest.raises(PasswordPolicyError, match="between 8 and 1024 characters") as caught:
        hash_password("x" * length)

    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "password_policy"
    assert caught.value.details == {"min_length": 8, "max_length": 1024}


def test_overlong_password_never_verifies() -> None:
    encoded = hash_password("x" * MAX_LENGTH)

    assert not verify_password("x" * (MAX_LENGTH + 1), encoded)


def test_unreadable_hash_is_a_mismatch() -> None:
    assert not verify_password("whatever1", "$2b$12$not-an-argon2-hash")
    assert not verify_password("whatever1", "")


def test_fresh_hash_needs_no_rehash() -> None:
    assert not needs_rehash(hash_password("not-a-common-one"))


def test_hash_with_other_parameters_or_scheme_needs_rehash() -> None:
    weaker = Argon2Hasher(time_cost=1, memory_cost=8 * 1024).hash("password1")

    assert needs_rehash(weaker)
    assert needs_rehash("$2b$12$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0")


def test_verify_dummy_fails_and_costs_a_real_verification() -> None:
    assert verify_dummy("any password") is False
    # Same cost as a real login: the dummy hash uses exactly the current parameters.
    dummy = passwords._dummy_hash()
    assert dummy.startswith("$argon2id$")
    assert not needs_rehash(dummy)


COMMON = "This password is one of the most common ones"


@pytest.mark.parametrize(
    "password",
    # ranks 9, 35, 17, 14, 31, 99, 579 and 9,004 of the list, compared in lower case
    [
        "password1",
        "qwerty123",
        "QWERTYUIOP",
        "iloveyou",
        "1q2w3e4r",
        "88888888",
        "12121212",
        "William123",
    ],
)
def test_a_common_password_is_refused_with_a_clear_message(password: str) -> None:
    with pytest.raises(PasswordPolicyError, match=COMMON) as caught:
        check_password_policy(password)
    assert caught.value.code == "password_policy"


def test_every_entry_of_eight_characters_or_more_is_refused_down_to_the_last() -> None:
    ranked = ranked_common_passwords()
    assert ranked.index("william123") + 1 == 9_004
    for password in [*[p for p in ranked[8990:] if len(p) >= MIN_LENGTH][:3], ranked[-1]]:
        with pytest.raises(PasswordPolicyError, match=COMMON):
            check_password_policy(password)


@pytest.mark.parametrize(
    "password",
    # The example credentials of the reference documents, whose documented calls must pass as
    # written: 001 (CloudTask) `securePassword123`, 004 (tasks) `securepassword123`; and
    # README's `correct horse battery`. 002 and 003 show none; 000's `admin` / `password` is a
    # built-in account that deliberately does not exist (CONTRACTS.md, [secure]), so its
    # `password` is never chosen as a new password and is refused like any common one.
    ["securePassword123", "securepassword123", "correct horse battery"],
)
def test_the_reference_documents_passwords_are_accepted(password: str) -> None:
    check_password_policy(password)
    assert verify_password(password, hash_password(password))


def test_the_shipped_list_is_the_top_ten_thousand_most_common_first() -> None:
    ranked = ranked_common_passwords()
    assert len(ranked) == len(set(ranked)) == 10_000
    assert ranked[:4] == ["123456", "123456789", "qwerty", "password"]
    assert all(p == p.lower() and p == p.strip() and p for p in ranked)
    assert common_passwords() == frozenset(ranked)
    header = (files("conveyor.auth") / "common_passwords.txt").read_text().partition("\n\n")[0]
    assert build.SHA256 in header and "Redistribution and use" in header  # the licence


def make_wheel(path: Path, entries: list[str]) -> str:
    """A wheel-shaped zip holding a Django-like list; the sha256 of its packed list."""
    packed = gzip.compress("".join(f"{e}\n" for e in entries).encode())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(build.MEMBER, packed)
        archive.writestr("django-0.dist-info/licenses/LICENSE", "Copyright (c) Someone.\n")
    return hashlib.sha256(packed).hexdigest()


def test_the_build_keeps_the_first_entries_in_order_and_the_licence(tmp_path: Path) -> None:
    wheel = tmp_path / "django-0-py3-none-any.whl"
    digest = make_wheel(wheel, ["#Hash1", "Abc12345", "qwerty", "left-out"])

    text = build.render(wheel, sha256=digest, top=3)

    assert entries_of(text) == ["#hash1", "abc12345", "qwerty"]  # "#..." is an entry
    assert "# Copyright (c) Someone." in text and digest in text
    with pytest.raises(ValueError, match="sha256"):
        build.render(wheel, sha256="0" * 64, top=3)
    with pytest.raises(ValueError, match="fewer than 5"):
        build.render(wheel, sha256=digest, top=5)
