"""Accounts: register, verify, sign in, refresh, sign out, me, password, API keys."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from conveyor.api.deps import NO_STORE, Context, CurrentUser, OptionalUser, Throttle, limited
from conveyor.api.schemas import (
    Accepted,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    EmailOnly,
    Login,
    PasswordChange,
    RefreshRequest,
    Register,
    TokensOut,
    UserOut,
    VerifyOtp,
)
from conveyor.domain.accounts import ApiKeyRecord
from conveyor.services.accounts import TokenPair, User

router = APIRouter(prefix="/api/v1", tags=["accounts"])

REGISTERED = "If the address can be registered, a verification code is on its way."


def tokens_out(pair: TokenPair) -> TokensOut:
    return TokensOut(
        access_token=pair.access, refresh_token=pair.refresh, expires_in=pair.access_expires_in
    )


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        role=user.role,
        verified=user.verified,
        disabled=user.disabled,
        created_at=user.created_at,
        fair_weight=user.fair_weight,
        max_queued=user.max_queued,
        max_running=user.max_running,
    )


def key_out(key: ApiKeyRecord) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


@router.post(
    "/auth/register",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[limited("register")],
)
async def register(body: Register, ctx: Context, actor: OptionalUser) -> Accepted:
    """Create an account; a 6-digit code is e-mailed. A taken address answers the same.

    `role: "admin"` is accepted only from a signed-in admin.
    """
    await ctx.accounts.register(body.email, body.password, body.role or "user", actor=actor)
    return Accepted(message=REGISTERED)


@router.post("/auth/verify", dependencies=[limited("otp")])
async def verify(body: VerifyOtp, ctx: Context) -> UserOut:
    """Verify the e-mail address with the code (10 minutes, single use, 5 tries)."""
    return user_out(await ctx.accounts.verify_otp(body.email, body.code))


@router.post("/auth/resend", status_code=status.HTTP_202_ACCEPTED, dependencies=[limited("otp")])
async def resend(body: EmailOnly, ctx: Context) -> Accepted:
    """Mail a new code (only the newest is valid); answers the same for any address."""
    await ctx.accounts.resend_otp(body.email)
    return Accepted(message="If the address awaits verification, a new code is on its way.")


@router.post("/auth/login", dependencies=[limited("login"), NO_STORE])
async def login(body: Login, ctx: Context, throttle: Throttle) -> TokensOut:
    """An access token (15 minutes) and a refresh token (14 days, rotating)."""
    return tokens_out(await ctx.accounts.login(body.email, body.password, throttle=throttle))


@router.post("/auth/refresh", dependencies=[limited("refresh"), NO_STORE])
async def refresh(body: RefreshRequest, ctx: Context) -> TokensOut:
    """A new pair for a refresh token; presenting a used one signs the whole session out."""
    return tokens_out(await ctx.accounts.refresh(body.refresh_token))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: RefreshRequest, ctx: Context) -> Response:
    await ctx.accounts.logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
async def me(user: CurrentUser) -> UserOut:
    return user_out(user)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(body: PasswordChange, user: CurrentUser, ctx: Context) -> Response:
    """Change the password; every refresh token of the account stops working."""
    await ctx.accounts.change_password(user, body.old_password, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/api-keys")
async def list_api_keys(user: CurrentUser, ctx: Context) -> list[ApiKeyOut]:
    return [key_out(k) for k in await ctx.accounts.list_api_keys(user)]


@router.post("/me/api-keys", status_code=status.HTTP_201_CREATED, dependencies=[NO_STORE])
async def create_api_key(body: ApiKeyCreate, user: CurrentUser, ctx: Context) -> ApiKeyCreated:
    """A key for programs (`Authorization: Bearer cvk_...`); the key is shown only now."""
    record, plaintext = await ctx.accounts.create_api_key(user, body.name)
    return ApiKeyCreated(**key_out(record).model_dump(), key=plaintext)


@router.delete("/me/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: str, user: CurrentUser, ctx: Context) -> Response:
    await ctx.accounts.revoke_api_key(user, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
