"""Typed failures of the auth primitives; the API maps the token errors to 401."""

from __future__ import annotations

from conveyor.errors import ConveyorError, InvalidInput


class PasswordPolicyError(InvalidInput):
    """The password must be between 8 and 1024 characters long."""

    code = "password_policy"


class InvalidToken(ConveyorError):
    """The token is not valid."""

    code = "invalid_token"


class ExpiredToken(InvalidToken):
    """The token has expired."""

    code = "token_expired"


class RefreshTokenReused(InvalidToken):
    """This refresh token was already used; every session started with it is now signed out."""

    code = "refresh_token_reused"


class OtpCooldown(ConveyorError):
    """A code was sent moments ago; wait before asking for another one."""

    code = "otp_cooldown"
