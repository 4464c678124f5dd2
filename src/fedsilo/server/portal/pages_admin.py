"""Portal administration pages: tokens (generate, list, revoke), users (create, delete,
their tokens), the audit log. They call the API's own route functions under the same
requirements (``admin``; a token may always revoke itself, as over the API)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from fedsilo.scopes import SCOPE_HELP, Scope
from fedsilo.server.api import audit, tokens, users
from fedsilo.server.api.deps import AdminToken, AnyToken, StoreDep
from fedsilo.server.portal.web import (
    PortalForm,
    local_path,
    portal_session,
    render,
    see_other,
    validation_detail,
)
from fedsilo.server.state import utcnow
from fedsilo.wire import TokenCreate, UserCreate

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
#: the audit entries a page shows (the newest)
AUDIT_ROWS = 500


def _expiry(value: str) -> float | None:
    """The form's ``expires_in_days``: a number of days, or ``never``."""
    if value == "never":
        return None
    try:
        return float(value)
    except ValueError:
        raise HTTPException(
            status_code=422,
            detail=f"expires_in_days: expected a number of days or 'never'; got {value!r}.",
        ) from None


@router.get("/tokens", response_class=HTMLResponse)
def token_page(
    request: Request, store: StoreDep, principal: AdminToken, user: str | None = None
) -> HTMLResponse:
    """The caller's own tokens, then every other user's (or one user's with ``?user=``)."""
    listed = tokens.list_tokens(store, principal, user=user or None)
    now = utcnow()
    return render(
        request,
        "tokens.html",
        principal,
        personal=[t for t in listed if t.user_id == principal.user_id],
        others=[t for t in listed if t.user_id != principal.user_id],
        user=user or "",
        users=users.list_users(store, principal),
        scopes=list(Scope),
        scope_help=SCOPE_HELP,
        now=now,
    )


@router.post("/tokens", response_class=HTMLResponse)
def token_create(
    request: Request, store: StoreDep, principal: AdminToken, form: PortalForm
) -> HTMLResponse:
    """Generate a token; the page shows its secret this once."""
    try:
        body = TokenCreate(
            user_id=form.get("user") or None,
            name=form.get("name") or None,
            scopes=form.getlist("scopes") or ["read_user_session"],
            expires_in_days=_expiry(form.get("expires_in_days", "30")),
        )
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=validation_detail(exc)) from exc
    created = tokens.create_token(body, request, store, principal)
    return render(request, "token_created.html", principal, created=created)


@router.post("/tokens/{token_id}/revoke")
def token_revoke(
    token_id: str, request: Request, store: StoreDep, principal: AnyToken, form: PortalForm
) -> Response:
    """Revoke a token (any with ``admin``; the signed-in token itself always)."""
    tokens.revoke_token(token_id, request, store, principal)
    session = portal_session(request)
    if token_id == principal.token_id and session is not None:
        request.app.state.portal_sessions.end(session.id)
        return see_other("/signin")
    return see_other(local_path(form.get("back"), "/tokens"))


@router.get("/users", response_class=HTMLResponse)
def user_page(request: Request, store: StoreDep, principal: AdminToken) -> HTMLResponse:
    listed = users.list_users(store, principal)
    active: dict[str, int] = {}
    for token in tokens.list_tokens(store, principal, user=None):
        if token.revoked_at is None and (token.expires_at is None or token.expires_at > utcnow()):
            key = token.user_id or ""
            active[key] = active.get(key, 0) + 1
    return render(request, "users.html", principal, users=listed, active_tokens=active)


@router.post("/users")
def user_create(
    request: Request, store: StoreDep, principal: AdminToken, form: PortalForm
) -> Response:
    try:
        body = UserCreate(name=form.get("name"), user_type=form.get("user_type") or "generated")
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=validation_detail(exc)) from exc
    users.create_user(body, request, store, principal)
    return see_other("/users")


@router.post("/users/{name}/delete")
def user_delete(
    name: str, request: Request, store: StoreDep, principal: AdminToken, _: PortalForm
) -> Response:
    users.delete_user(name, request, store, principal)
    return see_other("/users")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    store: StoreDep,
    principal: AdminToken,
    user: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> HTMLResponse:
    entries = audit.list_audit(
        store,
        principal,
        user=user or None,
        action=action or None,
        target=target or None,
        since=None,
        limit=AUDIT_ROWS,
    )
    return render(
        request,
        "audit.html",
        principal,
        entries=list(reversed(entries)),
        filters={"user": user or "", "action": action or "", "target": target or ""},
    )
