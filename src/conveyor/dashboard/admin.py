"""Administration: users (verify, promote, disable) and API keys (the signed-in user's)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request, Response

from conveyor.dashboard.web import (
    PREFIX,
    AdminSession,
    Context,
    DashboardRoute,
    SessionDep,
    flash,
    redirect,
    render,
)
from conveyor.errors import ConveyorError, InvalidInput

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)
UserAction = Literal["verify", "unverify", "promote", "demote", "disable", "enable"]


@router.get("/admin/users")
async def users(request: Request, session: AdminSession, ctx: Context) -> Response:
    listed = await ctx.accounts.list_users(limit=1000)
    return render(request, "users.html", session, page="users", users=listed)


@router.post("/admin/users/{user_id}/flow")
async def user_flow(
    request: Request,
    user_id: str,
    session: AdminSession,
    ctx: Context,
    fair_weight: Annotated[str, Form(max_length=20)] = "",
    max_queued: Annotated[str, Form(max_length=20)] = "",
    max_running: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """A user's fair-dispatch weight and quotas; an empty field is the default."""
    response = redirect(f"{PREFIX}/admin/users")
    try:
        user = await ctx.accounts.set_flow(
            user_id,
            fair_weight=_number(fair_weight, float, "fair_weight"),
            max_queued=_number(max_queued, int, "max_queued"),
            max_running=_number(max_running, int, "max_running"),
        )
    except ConveyorError as exc:
        flash(request, response, exc.message, "error")
        return response
    flash(request, response, f"Flow settings of {user.email} saved.")
    return response


def _number(text: str, kind: type[int] | type[float], name: str) -> Any:
    """A form field as a number of `kind`; empty is None (the default)."""
    if not text.strip():
        return None
    try:
        return kind(text.strip())
    except ValueError:
        raise InvalidInput(f"{name} must be a number", field=name) from None


@router.post("/admin/users/{user_id}/{action}")
async def user_action(
    request: Request, user_id: str, action: UserAction, session: AdminSession, ctx: Context
) -> Response:
    accounts = ctx.accounts
    response = redirect(f"{PREFIX}/admin/users")
    try:
        if action in ("verify", "unverify"):
            user = await accounts.set_verified(user_id, action == "verify")
        elif action in ("promote", "demote"):
            user = await accounts.set_role(user_id, "admin" if action == "promote" else "user")
        else:
            user = await accounts.set_disabled(user_id, action == "disable")
    except ConveyorError as exc:  # e.g. the last admin cannot be demoted or disabled
        flash(request, response, exc.message, "error")
        return response
    past = {"verify": "verified", "unverify": "marked unverified", "promote": "made an admin"}
    past |= {"demote": "made a user", "disable": "disabled", "enable": "enabled"}
    flash(request, response, f"{user.email} {past[action]}.")
    return response


@router.get("/keys")
async def api_keys(request: Request, session: SessionDep, ctx: Context) -> Response:
    keys = await ctx.accounts.list_api_keys(session.user, include_revoked=True)
    return render(request, "keys.html", session, page="keys", keys=keys, created=None)


@router.get("/admin/users/{user_id}/keys")
async def user_keys(
    request: Request, user_id: str, session: AdminSession, ctx: Context
) -> Response:
    """An admin's view of one account's keys, to revoke a leaked one."""
    owner = await ctx.accounts.get_user(user_id)
    keys = await ctx.accounts.list_api_keys(owner, include_revoked=True)
    return render(request, "user_keys.html", session, page="users", owner=owner, keys=keys)


@router.post("/admin/users/{user_id}/keys/{key_id}/revoke")
async def revoke_user_key(
    request: Request, user_id: str, key_id: str, session: AdminSession, ctx: Context
) -> Response:
    owner = await ctx.accounts.get_user(user_id)
    record = await ctx.accounts.revoke_api_key(owner, key_id)
    response = redirect(f"{PREFIX}/admin/users/{user_id}/keys")
    flash(request, response, f"API key {record.name!r} of {owner.email} revoked.")
    return response


@router.post("/keys")
async def create_key(
    request: Request,
    session: SessionDep,
    ctx: Context,
    name: Annotated[str, Form(max_length=200)],
) -> Response:
    """The plaintext is on this response only: it is never stored, and never shown again."""
    try:
        record, plaintext = await ctx.accounts.create_api_key(session.user, name)
    except ConveyorError as exc:
        response = redirect(f"{PREFIX}/keys")
        flash(request, response, exc.message, "error")
        return response
    keys = await ctx.accounts.list_api_keys(session.user, include_revoked=True)
    created = {"name": record.name, "key": plaintext}
    return render(request, "keys.html", session, page="keys", keys=keys, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, session: SessionDep, ctx: Context) -> Response:
    record = await ctx.accounts.revoke_api_key(session.user, key_id)
    response = redirect(f"{PREFIX}/keys")
    flash(request, response, f"API key {record.name!r} revoked.")
    return response
