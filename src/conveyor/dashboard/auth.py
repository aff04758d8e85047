"""Sign in, sign out, and the page an unverified account sees (with its code form)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from conveyor.api.deps import Throttle, limited
from conveyor.dashboard.web import (
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    AnySession,
    Context,
    CsrfRefused,
    DashboardRoute,
    Sessions,
    clear_cookie,
    flash,
    redirect,
    render,
    set_cookie,
)
from conveyor.errors import ConveyorError, Unauthenticated

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)
LOGIN_FORM_SECONDS = 3600


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never an open redirect to another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return PREFIX + "/"


def _login_page(
    request: Request, sessions: Sessions, next_url: str, error: str | None, status: int = 200
) -> Response:
    nonce = sessions.new_nonce()
    response = render(
        request,
        "login.html",
        None,
        status_code=status,
        login_csrf=sessions.login_csrf(nonce),
        next_url=_safe_next(next_url),
        error=error,
    )
    set_cookie(request, response, LOGIN_COOKIE, nonce, LOGIN_FORM_SECONDS)
    return response


@router.get("/login")
async def login_form(request: Request, sessions: Sessions, next: str | None = None) -> Response:
    return _login_page(request, sessions, next or "", None)


@router.post("/login", dependencies=[limited("login")])  # shares the API's sign-in budget
async def login(
    request: Request,
    sessions: Sessions,
    throttle: Throttle,
    login: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Checks the form's token against the nonce cookie first: a sign-in form posted from
    another site (login CSRF) is refused before any password is looked at."""
    if not sessions.check_login_csrf(request.cookies.get(LOGIN_COOKIE), csrf_token):
        raise CsrfRefused()
    try:
        cookie, _ = await sessions.sign_in(login, password, throttle=throttle)
    except Unauthenticated:
        return _login_page(request, sessions, next, "Wrong e-mail, username or password.", 401)
    response = redirect(_safe_next(next))
    max_age = int(sessions.ttl.total_seconds())
    set_cookie(request, response, SESSION_COOKIE, cookie, max_age)
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, session: AnySession, sessions: Sessions) -> Response:
    await sessions.sign_out(session)
    return _signed_out(request, "You are signed out.")


@router.post("/logout-everywhere")
async def logout_everywhere(request: Request, session: AnySession, sessions: Sessions) -> Response:
    """Every session of the account ends: this browser's, others', and the API's."""
    await sessions.sign_out_everywhere(session)
    return _signed_out(request, "You are signed out on every device.")


def _signed_out(request: Request, text: str) -> Response:
    response = redirect(f"{PREFIX}/login")
    clear_cookie(request, response, SESSION_COOKIE)
    flash(request, response, text)
    return response


@router.post("/verify", dependencies=[limited("otp")])
async def verify(
    request: Request,
    session: AnySession,
    ctx: Context,
    code: Annotated[str, Form(max_length=20)],
) -> Response:
    response = redirect(f"{PREFIX}/")
    try:
        await ctx.accounts.verify_otp(session.user.email, code.strip())
    except ConveyorError as exc:
        flash(request, response, exc.message, "error")
        return response
    flash(request, response, "Your e-mail address is verified.")
    return response


@router.post("/verify/resend", dependencies=[limited("otp")])
async def resend(request: Request, session: AnySession, ctx: Context) -> Response:
    await ctx.accounts.resend_otp(session.user.email)
    response = redirect(f"{PREFIX}/")
    flash(request, response, f"A new code is on its way to {session.user.email}.")
    return response
