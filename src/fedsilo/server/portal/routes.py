"""Portal routes: sign-in and sign-out, the dashboard, the static assets; the router of
every page (sessions and administration pages come from their own modules).

Each route declares the requirement the matching API route declares and calls the API's own
route function, so a page shows exactly what the token may read over the API.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from fedsilo.scopes import SCOPE_HELP, Scope
from fedsilo.server.access import public
from fedsilo.server.api import deps, sessions
from fedsilo.server.api.deps import AnyToken, StoreDep
from fedsilo.server.auth import authenticate
from fedsilo.server.portal import pages_admin, pages_sessions
from fedsilo.server.portal.session import COOKIE, SIGNIN_COOKIE, PortalSessions, cookie_header
from fedsilo.server.portal.web import (
    PACKAGE_DIR,
    PortalForm,
    admits,
    local_path,
    portal_session,
    read_form,
    render,
    see_other,
)
from fedsilo.server.state import ACTIVE_STATUSES, utcnow

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
STATIC_DIR = PACKAGE_DIR / "static"
_STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(css|js|svg|txt)$")
#: the dashboard counts sessions created within this window as recent
RECENT = timedelta(days=7)


def _sessions(request: Request) -> PortalSessions:
    found: PortalSessions = request.app.state.portal_sessions
    return found


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/static/{name}", dependencies=[Depends(public())])
def static_file(name: str) -> Response:
    """The portal's own CSS and JavaScript (shipped in the package: no CDN)."""
    path = STATIC_DIR / name
    if not _STATIC_NAME.match(name) or not path.is_file():
        raise HTTPException(status_code=404, detail=f"No static file {name!r}.")
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


def _signin_page(
    request: Request, error: str | None = None, status: int = 200, next_path: str = "/"
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        None,
        status=status,
        error=error,
        signin_csrf=_sessions(request).signin_csrf(nonce),
        next_path=next_path,
    )
    response.headers.append(
        "set-cookie", cookie_header(SIGNIN_COOKIE, nonce, secure=_secure(request), max_age=3600)
    )
    return response


@router.get("/signin", dependencies=[Depends(public())])
def signin_form(request: Request, next: str = "/") -> Response:
    """The sign-in form. ``/signin#token=<token>`` (the demo's link) fills and submits it from
    the fragment, which the browser never sends to the server."""
    next_path = local_path(next, "/")
    if portal_session(request) is not None:
        return see_other(next_path)
    return _signin_page(request, next_path=next_path)


@router.post("/signin", dependencies=[Depends(public())])
async def signin(request: Request) -> Response:
    """Check the token with the API's own authentication (401 details, 429 after too many
    failures from one address), then start a portal session."""
    form = await read_form(request)
    next_path = local_path(form.get("next"), "/")
    sessions_ = _sessions(request)
    if not sessions_.signin_ok(request.cookies.get(SIGNIN_COOKIE), form.get("csrf")):
        return _signin_page(
            request,
            "The sign-in form expired or came from another site; sign in again.",
            400,
            next_path,
        )
    secret = form.get("token")
    if not secret:
        return _signin_page(request, "Enter a token.", 422, next_path)
    # The API's authenticate(), on this request as if it carried the token as its bearer.
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    scope = {
        **request.scope,
        "headers": [*headers, (b"authorization", f"Bearer {secret}".encode())],
    }
    try:
        principal = await authenticate(Request(scope))
    except HTTPException as exc:
        failed = _signin_page(request, str(exc.detail), exc.status_code, next_path)
        for name, value in (exc.headers or {}).items():
            failed.headers[name] = value
        return failed
    _, cookie = sessions_.create(secret, principal.user_name)
    response: Response = RedirectResponse(next_path, status_code=303)
    response.headers.append("set-cookie", cookie_header(COOKIE, cookie, secure=_secure(request)))
    response.headers.append(
        "set-cookie", cookie_header(SIGNIN_COOKIE, "", secure=_secure(request), max_age=0)
    )
    return response


@router.post("/signout")
def signout(request: Request, _: AnyToken, form: PortalForm) -> Response:
    """End the portal session (the token itself stays valid: revoke it on Tokens)."""
    session = portal_session(request)
    if session is not None:
        _sessions(request).end(session.id)
    response = see_other("/signin")
    response.headers.append(
        "set-cookie", cookie_header(COOKIE, "", secure=_secure(request), max_age=0)
    )
    return response


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, store: StoreDep, principal: AnyToken) -> HTMLResponse:
    """Who is signed in, session counts (when the token may list sessions), and the Generate
    Access Token form (when it may create tokens)."""
    counts = None
    newest = []
    if admits(deps.SessionLister, principal):
        listed = sessions.list_sessions(store, principal)
        since = utcnow() - RECENT
        counts = {
            "running": sum(1 for s in listed if s.status in ACTIVE_STATUSES),
            "recent": sum(1 for s in listed if s.created_at >= since),
            "total": len(listed),
        }
        newest = sorted(listed, key=lambda s: s.created_at, reverse=True)[:5]
    return render(
        request,
        "dashboard.html",
        principal,
        counts=counts,
        newest=newest,
        can_create_tokens=admits(deps.AdminToken, principal),
        scopes=list(Scope),
        scope_help=SCOPE_HELP,
        scopes_held=sorted(str(s) for s in principal.scopes),
    )


router.include_router(pages_sessions.router)
router.include_router(pages_admin.router)
