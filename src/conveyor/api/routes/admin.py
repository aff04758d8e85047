"""Administration: users (list, create, change role, verify, disable, flow settings)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from conveyor.api.deps import AdminUser, Context
from conveyor.api.routes.auth import user_out
from conveyor.api.schemas import UserCreate, UserOut, UserUpdate

FLOW_FIELDS = ("fair_weight", "max_queued", "max_running")

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/users")
async def list_users(
    _admin: AdminUser,
    ctx: Context,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[UserOut]:
    size = min(limit, ctx.settings.max_page_size)
    return [user_out(u) for u in await ctx.accounts.list_users(after_id=cursor, limit=size)]


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, _admin: AdminUser, ctx: Context) -> UserOut:
    user = await ctx.accounts.create_user(
        body.email, body.password, body.role, verified=body.verified
    )
    return user_out(user)


@router.patch("/users/{user_id}")
async def update_user(user_id: str, body: UserUpdate, _admin: AdminUser, ctx: Context) -> UserOut:
    """Change role, verified or disabled (disabling signs the user out everywhere), and the
    user's flow settings: `fair_weight`, `max_queued`, `max_running` (a field left out is
    kept; null puts back the default; a quota of 0 is no cap: docs/flow-control.md)."""
    user = await ctx.accounts.get_user(user_id)
    flow = {name: getattr(body, name) for name in FLOW_FIELDS if name in body.model_fields_set}
    if flow:
        user = await ctx.accounts.set_flow(user_id, **flow)
    if body.role is not None:
        user = await ctx.accounts.set_role(user_id, body.role)
    if body.verified is not None:
        user = await ctx.accounts.set_verified(user_id, body.verified)
    if body.disabled is not None:
        user = await ctx.accounts.set_disabled(user_id, body.disabled)
    return user_out(user)
