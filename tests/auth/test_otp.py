from __future__ import annotations

import re
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.auth.errors import OtpCooldown
from conveyor.auth.otp import OtpCodes, OtpPolicy, generate_code
from conveyor.domain.otp import OtpOutcome, OtpRecord

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
SUBJECT = "verify-email:user-1"


@pytest.fixture
def codes() -> OtpCodes:
    return OtpCodes(secrets.token_urlsafe(48))


@pytest.fixture
def issued(codes: OtpCodes) -> tuple[str, OtpRecord]:
    return codes.issue(SUBJECT, NOW)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_codes_are_six_digits() -> None:
    for _ in range(200):
        assert re.fullmatch(r"[0-9]{6}", generate_code())


def test_small_codes_are_zero_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbelow", lambda _: 42)

    assert generate_code() == "000042"


def test_issued_record_stores_a_keyed_hash_not_the_code(issued: tuple[str, OtpRecord]) -> None:
    code, record = issued

    assert record.subject == SUBJECT
    assert code not in record.code_hash
    assert re.fullmatch(r"[0-9a-f]{64}", record.code_hash)
    assert (record.created_at, record.expires_at) == (NOW, NOW + timedelta(minutes=10))
    assert (record.attempts, record.used_at) == (0, None)


def test_right_code_passes_once(codes: OtpCodes, issued: tuple[str, OtpRecord]) -> None:
    code, record = issued

    first = codes.check(record, code, NOW + timedelta(minutes=1))
    again = codes.check(first.record, code, NOW + timedelta(minutes=2))

    assert first.ok
    assert first.record.used_at == NOW + timedelta(minutes=1)
    assert again.outcome is OtpOutcome.USED
    assert again.record == first.record


def test_spaces_around_and_inside_the_code_are_ignored(
    codes: OtpCodes, issued: tuple[str, OtpRecord]
) -> None:
    code, record = issued

    assert codes.check(record, f" {code[:3]} {code[3:]}\n", NOW).ok


def test_code_expires_after_ten_minutes(codes: OtpCodes, issued: tuple[str, OtpRecord]) -> None:
    code, record = issued

    assert codes.check(record, code, NOW + timedelta(minutes=10) - timedelta(seconds=1)).ok
    late = codes.check(record, code, NOW + timedelta(minutes=10))
    assert late.outcome is OtpOutcome.EXPIRED
    assert late.record == record


def test_five_wrong_tries_lock_the_code(codes: OtpCodes, issued: tuple[str, OtpRecord]) -> None:
    code, record = issued

    for attempt in range(1, 6):
        result = codes.check(record, _wrong(code), NOW)
        assert result.outcome is OtpOutcome.WRONG
        record = result.record
        assert record.attempts == attempt

    locked = codes.check(record, code, NOW)
    assert locked.outcome is OtpOutcome.LOCKED
    assert locked.record.used_at is None


def test_four_wrong_tries_still_allow_the_right_code(
    codes: OtpCodes, issued: tuple[str, OtpRecord]
) -> None:
    code, record = issued
    for _ in range(4):
        record = codes.check(record, _wrong(code), NOW).record

    assert codes.check(record, code, NOW).ok


@pytest.mark.parametrize("guess", ["", "abcdef", "12345", "1234567", "١٢٣٤٥٦"])
def test_malformed_guesses_are_wrong_and_count(
    codes: OtpCodes, issued: tuple[str, OtpRecord], guess: str
) -> None:
    _, record = issued

    result = codes.check(record, guess, NOW)

    assert result.outcome is OtpOutcome.WRONG
    assert result.record.attempts == 1


def test_only_the_newest_code_is_valid(codes: OtpCodes, issued: tuple[str, OtpRecord]) -> None:
    old_code, old_record = issued

    new_code, new_record = codes.issue(SUBJECT, NOW + timedelta(seconds=60), old_record)

    assert new_code != old_code
    assert codes.check(new_record, old_code, NOW + timedelta(seconds=61)).outcome is (
        OtpOutcome.WRONG
    )
    assert codes.check(new_record, new_code, NOW + timedelta(seconds=62)).ok


def test_resend_within_cooldown_is_refused(codes: OtpCodes, issued: tuple[str, OtpRecord]) -> None:
    _, record = issued

    with pytest.raises(OtpCooldown) as caught:
        codes.issue(SUBJECT, NOW + timedelta(seconds=30), record)

    assert caught.value.details == {"retry_after": 30}
    assert codes.retry_after(record, NOW + timedelta(seconds=30)) == timedelta(seconds=30)
    assert codes.retry_after(record, NOW + timedelta(minutes=5)) == timedelta(0)
    assert codes.retry_after(None, NOW) == timedelta(0)


def test_policy_is_configurable() -> None:
    codes = OtpCodes("k" * 48, OtpPolicy(ttl=timedelta(minutes=1), max_attempts=1))
    code, record = codes.issue(SUBJECT, NOW)

    wrong = codes.check(record, _wrong(code), NOW)
    assert codes.check(wrong.record, code, NOW).outcome is OtpOutcome.LOCKED
    assert codes.check(record, code, NOW + timedelta(minutes=1)).outcome is OtpOutcome.EXPIRED


def test_hash_depends_on_the_secret_key_and_the_subject(
    codes: OtpCodes, issued: tuple[str, OtpRecord]
) -> None:
    code, record = issued
    other_key = OtpCodes(secrets.token_urlsafe(48))

    assert other_key.check(record, code, NOW).outcome is OtpOutcome.WRONG
    moved = replace(record, subject="verify-email:user-2")
    assert codes.check(moved, code, NOW).outcome is OtpOutcome.WRONG
