from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from conveyor.auth.errors import ExpiredToken, InvalidToken
from conveyor.auth.tokens import TokenService
from conveyor.errors import ConfigurationError

SECRET = secrets.token_urlsafe(48)
START = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> TokenService:
    return TokenService(SECRET, clock=clock)


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * 4))
    return decoded


def test_access_token_round_trip(tokens: TokenService) -> None:
    claims = tokens.decode(tokens.issue_access("user-1", "member"), "access")

    assert (claims.sub, claims.role, claims.type, claims.family) == (
        "user-1",
        "member",
        "access",
        None,
    )
    assert claims.iat == START
    assert claims.exp == START + timedelta(minutes=15)
    assert len(claims.jti) == 32


def test_token_carries_the_registered_claims(tokens: TokenService) -> None:
    payload = _payload(tokens.issue_access("user-1", "member"))

    assert {"exp", "iat", "jti", "sub", "typ", "iss", "aud"} <= payload.keys()
    assert (payload["iss"], payload["aud"], payload["typ"]) == ("conveyor", "conveyor", "access")


def test_refresh_token_round_trip(tokens: TokenService) -> None:
    issued = tokens.issue_refresh("user-1")
    claims = tokens.decode(issued.token, "refresh")

    assert (claims.sub, claims.type, claims.role) == ("user-1", "refresh", None)
    assert claims.jti == issued.jti
    assert claims.family == issued.family_id
    assert claims.exp == issued.expires_at == START + timedelta(days=14)


def test_refresh_keeps_a_given_family_and_gets_a_new_jti(tokens: TokenService) -> None:
    first = tokens.issue_refresh("user-1")
    second = tokens.issue_refresh("user-1", first.family_id)

    assert second.family_id == first.family_id
    assert second.jti != first.jti
    assert tokens.issue_refresh("user-1").family_id != first.family_id


def test_tampered_payload_is_rejected(tokens: TokenService) -> None:
    token = tokens.issue_access("user-1", "member")
    header, _, signature = token.split(".")
    payload = _payload(token)
    forged = ".".join([header, _b64({**payload, "role": "admin"}), signature])

    with pytest.raises(InvalidToken):
        tokens.decode(forged, "access")


def test_token_signed_with_another_secret_is_rejected(tokens: TokenService) -> None:
    other = TokenService(secrets.token_urlsafe(48), clock=lambda: START)

    with pytest.raises(InvalidToken):
        tokens.decode(other.issue_access("user-1", "admin"), "access")


def test_alg_none_token_is_rejected(tokens: TokenService) -> None:
    payload = _payload(tokens.issue_access("user-1", "member"))
    unsigned = _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(payload) + "."

    with pytest.raises(InvalidToken):
        tokens.decode(unsigned, "access")


def test_other_hmac_algorithm_is_rejected(tokens: TokenService) -> None:
    payload = _payload(tokens.issue_access("user-1", "member"))
    hs512 = jwt.encode(payload, SECRET, algorithm="HS512")

    with pytest.raises(InvalidToken):
        tokens.decode(hs512, "access")


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "sub", "iss", "aud", "typ"])
def test_token_missing_a_required_claim_is_rejected(tokens: TokenService, claim: str) -> None:
    payload = _payload(tokens.issue_access("user-1", "member"))
    del payload[claim]

    with pytest.raises(InvalidToken):
        tokens.decode(jwt.encode(payload, SECRET, algorithm="HS256"), "access")


def test_access_token_without_role_is_rejected(tokens: TokenService) -> None:
    payload = _payload(tokens.issue_access("user-1", "member"))
    del payload["role"]

    with pytest.raises(InvalidToken):
        tokens.decode(jwt.encode(payload, SECRET, algorithm="HS256"), "access")


def test_expired_token_is_rejected(tokens: TokenService, clock: FakeClock) -> None:
    token = tokens.issue_access("user-1", "member")
    clock.now = START + timedelta(minutes=15) - timedelta(seconds=1)
    assert tokens.decode(token, "access").sub == "user-1"

    clock.now = START + timedelta(minutes=15) + tokens.leeway
    with pytest.raises(ExpiredToken) as caught:
        tokens.decode(token, "access")

    assert isinstance(caught.value, InvalidToken)
    assert caught.value.code == "token_expired"


def test_expired_refresh_token_is_rejected(tokens: TokenService, clock: FakeClock) -> None:
    issued = tokens.issue_refresh("user-1")
    clock.now = issued.expires_at + timedelta(minutes=1)

    with pytest.raises(ExpiredToken):
        tokens.decode(issued.token, "refresh")


def test_token_from_the_future_is_rejected(tokens: TokenService, clock: FakeClock) -> None:
    clock.now = START + timedelta(minutes=5)
    token = tokens.issue_access("user-1", "member")
    clock.now = START

    with pytest.raises(InvalidToken, match="not valid yet"):
        tokens.decode(token, "access")


def test_refresh_token_is_refused_as_access(tokens: TokenService) -> None:
    refresh = tokens.issue_refresh("user-1").token

    with pytest.raises(InvalidToken, match="'access'") as caught:
        tokens.decode(refresh, "access")

    assert caught.value.code == "invalid_token"


def test_access_token_is_refused_as_refresh(tokens: TokenService) -> None:
    with pytest.raises(InvalidToken, match="'refresh'"):
        tokens.decode(tokens.issue_access("user-1", "member"), "refresh")


def test_other_audience_or_issuer_is_rejected(tokens: TokenService) -> None:
    elsewhere = TokenService(SECRET, audience="other-app", clock=lambda: START)
    impostor = TokenService(SECRET, issuer="someone-else", clock=lambda: START)

    with pytest.raises(InvalidToken):
        tokens.decode(elsewhere.issue_access("user-1", "member"), "access")
    with pytest.raises(InvalidToken):
        tokens.decode(impostor.issue_access("user-1", "member"), "access")


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "a.b"])
def test_garbage_is_an_invalid_token(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode(garbage, "access")


def test_short_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        TokenService("too-short")


def test_default_clock_issues_tokens_valid_now() -> None:
    tokens = TokenService(SECRET)
    claims = tokens.decode(tokens.issue_access("user-1", "member"), "access")

    assert abs(claims.iat - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_remembered_access_token_is_still_checked_on_every_use(
    tokens: TokenService, clock: FakeClock
) -> None:
    """Claims are remembered per token once verified; its type and times are not."""
    token = tokens.issue_access("user-1", "member")
    assert tokens.decode(token, "access").sub == "user-1"
    assert tokens.decode(token, "access").sub == "user-1"  # remembered
    with pytest.raises(InvalidToken):
        tokens.decode(token, "refresh")
    head, _, signature = token.split(".")
    forged = f"{head}.{_b64({**_payload(token), 'sub': 'user-2'})}.{signature}"
    with pytest.raises(InvalidToken):
        tokens.decode(forged, "access")
    clock.now = START + timedelta(minutes=15, seconds=11)
    with pytest.raises(ExpiredToken):
        tokens.decode(token, "access")
