"""What every dashboard page shares: templates, the session cookie, CSRF, and HTML errors.

Errors are mapped here, once, for the dashboard's routes (the API's handlers answer JSON):
a missing or ended session redirects to the sign-in page, an unverified account gets a page
that says so, a refused CSRF token is 403, and the typed errors of `conveyor.errors` become
an error page (or, for the page's own fetch calls, the API's JSON error shape).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from conveyor.api.deps import AppContext, get_context
from conveyor.api.errors import error_body, status_of
from conveyor.dashboard import formats
from conveyor.errors import ConveyorError, Forbidden, Unauthenticated
from conveyor.services.accounts.web_sessions import WebSession, WebSessions

log = logging.getLogger("conveyor.dashboard")

PREFIX = "/dashboard"
SESSION_COOKIE = "conveyor_session"
LOGIN_COOKIE = "conveyor_login"  # the sign-in form's nonce, before there is a session
FLASH_COOKIE = "conveyor_flash"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Pages load only this server's files, cannot be framed (clickjacking) and post only here.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(formats.FILTERS)
templates.env.globals.update(prefix=PREFIX, states=formats.STATE_NAMES)


class SignInRequired(Unauthenticated):
    """Sign in to use the dashboard."""


class Unverified(Forbidden):
    """Verify your e-mail address before using the dashboard."""

    def __init__(self, session: WebSession) -> None:
        super().__init__()
        self.session = session


class CsrfRefused(Forbidden):
    """The form is out of date or did not come from this site; reload the page and try again."""

    code = "csrf_refused"


# ---- the session ------------------------------------------------------------------------------
def web_sessions(request: Request) -> WebSessions:
    """One `WebSessions` per app, made on first use from the app's accounts service."""
    state = request.app.state
    sessions: WebSessions | None = getattr(state, "dashboard_sessions", None)
    if sessions is None:
        ctx = get_context(request)
        ttl = timedelta(hours=ctx.settings.dashboard_session_hours)
        secret = ctx.settings.resolved_secret_key()
        sessions = WebSessions(ctx.accounts, secret, ttl)
        state.dashboard_sessions = sessions
    return sessions


Sessions = Annotated[WebSessions, Depends(web_sessions)]


async def current_session(request: Request, sessions: Sessions) -> WebSession:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise SignInRequired()
    session = await sessions.resume(cookie)
    if request.method not in SAFE_METHODS:
        await _check_csrf(request, sessions, session)
    return session


async def _check_csrf(request: Request, sessions: WebSessions, session: WebSession) -> None:
    token = request.headers.get(CSRF_HEADER)
    if token is None and _is_form(request):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not sessions.check_csrf(session, token):
        log.warning("CSRF token refused on %s %s", request.method, request.url.path)
        raise CsrfRefused()


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


AnySession = Annotated[WebSession, Depends(current_session)]


async def verified_session(session: AnySession, request: Request) -> WebSession:
    accounts = get_context(request).accounts
    if accounts.email_verification and not session.user.verified:
        raise Unverified(session)
    return session


async def admin_session(session: Annotated[WebSession, Depends(verified_session)]) -> WebSession:
    if not session.user.is_admin:
        raise Forbidden("this page is for administrators")
    return session


SessionDep = Annotated[WebSession, Depends(verified_session)]
AdminSession = Annotated[WebSession, Depends(admin_session)]
Context = Annotated[AppContext, Depends(get_context)]


def owner_scope(session: WebSession) -> str | None:
    """Whose jobs a page shows: the user's own, or everyone's for an admin."""
    return None if session.user.is_admin else session.user.id


def secure_cookies(request: Request) -> bool:
    setting: bool | None = get_context(request).settings.dashboard_secure_cookies
    return request.url.scheme == "https" if setting is None else setting


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        secure=secure_cookies(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=PREFIX, secure=secure_cookies(request), httponly=True, samesite="strict"
    )


# ---- pages ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flash:
    kind: str  # "ok" or "error"
    text: str


def flash(request: Request, response: Response, text: str, kind: str = "ok") -> None:
    """A message for the next page this browser shows (after a redirect)."""
    set_cookie(request, response, FLASH_COOKIE, quote(f"{kind}:{text}"), 60)


def _take_flash(request: Request) -> Flash | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    kind, _, text = unquote(raw).partition(":")
    return Flash("error" if kind == "error" else "ok", text[:500])


def render(
    request: Request,
    name: str,
    session: WebSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    notice = _take_flash(request)
    values = {"session": session, "user": session.user if session else None, "flash": notice}
    response = templates.TemplateResponse(
        request, name, {**values, **context}, status_code=status_code
    )
    response.headers.update(PAGE_HEADERS)
    if notice is not None:
        clear_cookie(request, response, FLASH_COOKIE)
    return response


def redirect(to: str) -> RedirectResponse:
    """After a form: 303, so the browser GETs the next page."""
    return RedirectResponse(to, status_code=303)


def wants_json(request: Request) -> bool:
    return CSRF_HEADER in request.headers or "application/json" in request.headers.get("accept", "")


# ---- errors -----------------------------------------------------------------------------------
class DashboardRoute(APIRoute):
    """Runs a dashboard endpoint and turns its typed errors into pages (see the module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return _to_sign_in(request)
            except Unauthenticated as exc:
                response = _to_sign_in(request, exc.message)
                clear_cookie(request, response, SESSION_COOKIE)
                return response
            except ConveyorError as exc:
                return _error_page(request, exc, await _quiet_session(request))
            except RequestValidationError as exc:
                return _invalid_request(request, exc, await _quiet_session(request))

        return guarded


def _to_sign_in(request: Request, why: str | None = None) -> Response:
    """A page redirects to the sign-in form; a script's fetch, a stream (EventSource would
    choke on an HTML page) and a form post get a plain 401."""
    streaming = "text/event-stream" in request.headers.get("accept", "")
    if wants_json(request) or streaming or request.method not in SAFE_METHODS:
        message = why or SignInRequired.__doc__ or ""
        return JSONResponse(error_body("unauthenticated", message.strip()), status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = redirect(f"{PREFIX}/login?next={quote(target, safe='')}")
    if why:
        flash(request, response, why, "error")
    return response


async def _quiet_session(request: Request) -> WebSession | None:
    """The signed-in session, if any, so an error page keeps its navigation."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return await web_sessions(request).resume(cookie)
    except ConveyorError:
        return None


def _error_page(request: Request, exc: ConveyorError, session: WebSession | None) -> Response:
    status = status_of(exc)
    if wants_json(request):
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=status)
    if isinstance(exc, Unverified):
        return render(request, "unverified.html", exc.session, status_code=403)
    return render(request, "error.html", session, status_code=status, status=status, error=exc)


def _invalid_request(
    request: Request, exc: RequestValidationError, session: WebSession | None
) -> Response:
    fields = [".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()]
    message = "these fields are not valid: " + ", ".join(f for f in fields if f)
    if wants_json(request):
        return JSONResponse(error_body("validation_error", message), status_code=422)
    error = ConveyorError(message)
    return render(request, "error.html", session, status_code=422, status=422, error=error)
