"""Reference 001 (CloudTask): /auth/register, /auth/login, /actuator/health.

Its `/jobs` calls are served by `compat.jobscope`. Secure default: with e-mail verification
on, the token returned by register works once the e-mail is verified
(CONVEYOR_EMAIL_VERIFICATION=false restores the documented flow).
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.deps import NO_STORE, Context, Throttle, limited
from conveyor.api.schemas import SignUp
from conveyor.compat.jobscope import TokenOut

router = APIRouter(tags=["compat: CloudTask (001)"])


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class ActuatorHealth(BaseModel):
    status: str


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[limited("register"), NO_STORE],
)
async def register(body: SignUp, ctx: Context) -> TokenOut:
    """A taken e-mail answers alike: its token belongs to no account and authenticates nobody."""
    result = await ctx.accounts.register(body.email, body.password)
    return TokenOut(token=ctx.accounts.registration_token(result))


@router.post("/auth/login", dependencies=[limited("login"), NO_STORE])
async def login(body: Credentials, ctx: Context, throttle: Throttle) -> TokenOut:
    pair = await ctx.accounts.login(body.email, body.password, throttle=throttle)
    return TokenOut(token=pair.access)


@router.get("/actuator/health")
async def actuator_health() -> ActuatorHealth:
    """Liveness, as Spring Boot's actuator answers it."""
    return ActuatorHealth(status="UP")
