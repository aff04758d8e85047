from __future__ import annotations

import pytest
from pwdlib.hashers.argon2 import Argon2Hasher

from conveyor.auth import passwords
from conveyor.auth.errors import PasswordPolicyError
from conveyor.auth.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    check_password_policy,
    common_passwords,
    hash_password,
    needs_rehash,
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


@pytest.mark.parametrize(
    "password", ["password1", "Password1", "QWERTYUIOP", "iloveyou", "1q2w3e4r"]
)
def test_a_common_password_is_refused_with_a_clear_message(password: str) -> None:
    with pytest.raises(PasswordPolicyError, match="most common"):
        check_password_policy(password)


@pytest.mark.parametrize(
    "password",
    # the example credentials of the reference documents: their documented calls must pass
    ["securePassword123", "securepassword123", "correct horse battery"],
)
def test_the_reference_documents_passwords_are_not_common(password: str) -> None:
    check_password_policy(password)


def test_the_shipped_list_is_read() -> None:
    common = common_passwords()
    assert len(common) > 900 and all(len(p) >= 8 and p == p.lower() for p in common)
