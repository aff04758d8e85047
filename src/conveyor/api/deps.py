"""Named dependencies: who is calling, what they may see, and the rate limits they meet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conveyor.api.ratelimit import Charge, RateLimits, SigninThrottle
from conveyor.auth.api_keys import looks_like_api_key
from conveyor.errors import Unauthenticated
from conveyor.runtime import Engine
from conveyor.services.accounts import AccountService, Credential, User, require_admin
from conveyor.services.intake import Intake
from conveyor.settings import Settings

# The largest integer either database holds (PostgreSQL BIGINT, SQLite INTEGER): every integer
# a path or query passes on to the store is declared at most this, so a larger one is a 422.
BIGINT_MAX = 2**63 - 1


@dataclass
class AppContext:
    """Everything a request handler may use, built once per app by the lifespan."""

    settings: Settings
    engine: Engine
    accounts: AccountService
    limits: RateLimits
    intake: Intake = field(init=False)  # submissions, committed in groups (services/intake.py)

    def __post_init__(self) -> None:
        self.intake = Intake(self.engine.jobs, self.accounts, self.engine.flow)


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.conveyor
    return context


async def context(request: Request) -> AppContext:
    """`get_context` as a dependency. `async`, as every dependency must be: FastAPI runs a
    plain `def` dependency in its thread pool, a thread hand-off on every request (about a
    tenth of a single submit's CPU, measured with py-spy)."""
    return get_context(request)


Context = Annotated[AppContext, Depends(context)]
_bearer = HTTPBearer(auto_error=False, description="An access token (JWT) or an API key (cvk_...)")


def bearer_token(request: Request) -> str:
    """`Bearer <token>`, or the bare token (as reference 004's clients send it)."""
    header = request.headers.get("authorization", "").strip()
    scheme, _, value = header.partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else header
    if not token or " " in token:
        raise Unauthenticated("a bearer token is required")
    return token


async def current_user(
    request: Request,
    ctx: Context,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    token = bearer_token(request)
    if looks_like_api_key(token):
        return await ctx.accounts.user_from_api_key(token)
    return await ctx.accounts.user_from_access_token(token)


CurrentUser = Annotated[User, Depends(current_user)]


async def optional_user(
    request: Request,
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User | None:
    """The caller if they sent credentials (which must then be valid), else None."""
    if not request.headers.get("authorization"):
        return None
    return await current_user(request, ctx, credentials)


OptionalUser = Annotated[User | None, Depends(optional_user)]


async def verified_user(user: CurrentUser, ctx: Context) -> User:
    ctx.accounts.require_verified(user)  # the rule lives with the accounts
    return user


VerifiedUser = Annotated[User, Depends(verified_user)]


async def admin_user(user: CurrentUser) -> User:
    require_admin(user)
    return user


AdminUser = Annotated[User, Depends(admin_user)]


async def charge_submission(ctx: AppContext, key: str, jobs: int = 1) -> None:
    """One submission request (RATE_LIMIT_SUBMIT) carrying `jobs` jobs (RATE_LIMIT_JOBS, so a
    batch costs its length), per user `key`, in one check (one round trip to Redis); nothing
    is spent unless both allow it, else RateLimited."""
    settings = ctx.settings
    await ctx.limits.charge(
        Charge(settings.rate_limit_submit, ("submit", key)),
        Charge(settings.rate_limit_jobs, ("jobs", key), cost=jobs, unit="jobs"),
    )


@dataclass(frozen=True, slots=True)
class Submitting:
    """A submission's caller, as its token claims, and the app's context."""

    credential: Credential
    ctx: AppContext


async def submitter(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Submitting:
    """Who a submission claims to be, read from its token alone: the store confirms it in
    the transaction that inserts the jobs (`conveyor.services.intake`). It carries the
    context too, so a submit route resolves two dependencies, not four (FastAPI's work
    per dependency is a visible part of a single submit's CPU)."""
    ctx = get_context(request)
    return Submitting(await ctx.accounts.credential(bearer_token(request)), ctx)


Submitter = Annotated[Submitting, Depends(submitter)]


async def submitting_user(user: VerifiedUser, ctx: Context) -> User:
    """A verified user within their job-submission rate, submitting one job (the reference
    adapters' submissions; the API's own go through `Submitter` and the intake)."""
    await charge_submission(ctx, user.id)
    return user


SubmittingUser = Annotated[User, Depends(submitting_user)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limited(scope: str) -> Any:
    """A per-IP limit on an unauthenticated call (register, login, OTP); sign-ins also meet
    the per-account throttle, which the route passes on with the credentials (`Throttle`)."""

    async def check(request: Request, ctx: Context) -> None:
        await ctx.limits.check(ctx.settings.rate_limit_auth, scope, client_ip(request))

    return Depends(check)


def signin_throttle(request: Request, ctx: Context) -> SigninThrottle:
    """The per-account sign-in throttle (`conveyor.api.ratelimit.SigninThrottle`) for this
    request's client, for a sign-in route to hand to `AccountService.login`/`authenticate`."""
    return SigninThrottle(ctx.limits, ctx.settings.rate_limit_login_account, client_ip(request))


Throttle = Annotated[SigninThrottle, Depends(signin_throttle)]


def owner_scope(user: User) -> str | None:
    """The owner a query is limited to: the caller, or nobody in particular for admins."""
    return None if user.is_admin else user.id


async def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


# On answers that carry a credential (tokens, API keys, signing secrets): no cache keeps them.
NO_STORE = Depends(_no_store)
