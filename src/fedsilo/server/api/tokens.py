"""Tokens: create for a user (the secret is shown once), inspect, list, revoke.

A token created without scopes gets the least privilege (``read_user_session``), never
``admin``. A token carrying any scope but ``admin`` lives at most
:data:`~fedsilo.scopes.MAX_SCOPED_TOKEN_DAYS` days (default 30, the seed's limit); a token
whose scopes are exactly ``[admin]`` may live up to :data:`~fedsilo.scopes.MAX_TOKEN_DAYS`
days or never expire (``expires_in_days: null``).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Query, Request

from fedsilo.scopes import MAX_SCOPED_TOKEN_DAYS, MAX_TOKEN_DAYS, Scope, parse_scopes
from fedsilo.server import audit
from fedsilo.server.api.deps import (
    ACCESS_RESPONSES,
    BODY_RESPONSES,
    AdminToken,
    AnyToken,
    StoreDep,
    errors,
    not_found,
)
from fedsilo.server.api.users import find_user, user_not_found
from fedsilo.server.auth import TokenCache, hash_token, issue_token, token_public
from fedsilo.server.state import StateStore, TokenRecord, UserRecord, utcnow
from fedsilo.wire import TokenCreate, TokenCreated, TokenInfo, TokenInfoRequest, TokenPublic

__all__ = ["router"]

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=ACCESS_RESPONSES)

#: token_info's ``env``: where this server runs (one deployment kind today)
ENV = "local"


def _scopes(names: list[str]) -> tuple[Scope, ...]:
    """The requested scopes; none means the least privilege; an unknown name is 422."""
    try:
        scopes = parse_scopes(names)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"scopes: {exc}.") from exc
    return scopes or (Scope.read_user_session,)


def _lifetime(scopes: tuple[Scope, ...], days: float | None) -> timedelta | None:
    """How long the token lives (``None``: never); 422 past the limit of its scopes."""
    if set(scopes) == {Scope.admin}:
        if days is not None and days > MAX_TOKEN_DAYS:
            raise HTTPException(
                status_code=422,
                detail=f"expires_in_days: a token lives at most {MAX_TOKEN_DAYS} days "
                f"(null: never expires). Got {days:g}.",
            )
        return timedelta(days=days) if days is not None else None
    if days is None or days > MAX_SCOPED_TOKEN_DAYS:
        shown = "null (never expires)" if days is None else f"{days:g}"
        raise HTTPException(
            status_code=422,
            detail=f"expires_in_days: a scoped token lives at most {MAX_SCOPED_TOKEN_DAYS} "
            f"days; only a token whose scopes are exactly ['admin'] may live longer. "
            f"Got {shown}.",
        )
    return timedelta(days=days)


@router.post(
    "",
    status_code=201,
    responses={**BODY_RESPONSES, **errors(404, notes={404: "unknown user"})},
)
def create_token(
    body: TokenCreate, request: Request, store: StoreDep, principal: AdminToken
) -> TokenCreated:
    """A new token for ``user_id`` (a user's name or id; the caller's own user by default)."""
    scopes = _scopes(body.scopes)
    expires_in = _lifetime(scopes, body.expires_in_days)
    if body.user_id is None:
        user = store.get_user(principal.user_id)
        if user is None:
            raise user_not_found(principal.user_name)
    else:
        found = find_user(store, body.user_id)
        if found is None:
            raise user_not_found(body.user_id)
        user = found
    created = issue_token(store, user, body.name or user.name, scopes, expires_in)
    detail = f"for user {user.name!r} ({user.id}), scopes {' '.join(scopes)}"
    audit.record(request, principal, "token.create", created.id, detail=detail)
    return created


@router.post("/info", responses={**BODY_RESPONSES, **errors(404, notes={404: "no token matches"})})
def token_info(
    body: TokenInfoRequest, request: Request, store: StoreDep, principal: AnyToken
) -> TokenInfo:
    """The seed's ``token_info`` of a token: the caller's own, or any with ``admin``."""
    record = store.get_token_by_hash(hash_token(body.token))
    # One answer whether or not the token exists: a non-admin learns nothing of others'.
    if not principal.is_admin and (record is None or record.id != principal.token_id):
        raise HTTPException(
            status_code=403, detail="Inspecting another token needs the 'admin' scope."
        )
    if record is None:
        raise HTTPException(status_code=404, detail="No token matches the one given.")
    user = store.get_user(record.user_id) if record.user_id is not None else None
    workspace: str = request.app.state.settings.workspace
    return _info(record, user, workspace)


def _info(record: TokenRecord, user: UserRecord | None, workspace: str) -> TokenInfo:
    now = utcnow()
    expired = record.expires_at is not None and record.expires_at <= now
    return TokenInfo(
        customer=workspace,
        email=user.id if user is not None else (record.user_id or ""),
        role="admin" if Scope.admin in record.scopes else "user",
        env=ENV,
        token_id=record.id,
        iat=int(record.created_at.timestamp()),
        expires=int(record.expires_at.timestamp()) if record.expires_at is not None else None,
        scope=" ".join(record.scopes),
        # The seed's token_info names the user by name under user_id; a deleted user's
        # name is gone with it.
        user_id=user.name if user is not None else "",
        user_type=user.user_type if user is not None else "deleted",
        active=user is not None and user.active and record.revoked_at is None and not expired,
    )


@router.get("", responses=errors(404, notes={404: "unknown user"}))
def list_tokens(
    store: StoreDep,
    _: AdminToken,
    user: str | None = Query(default=None, description="only this user's (name or id)"),
) -> list[TokenPublic]:
    """Every token (revoked ones too), oldest first; never a secret or a hash."""
    users = {u.id: u for u in store.list_users()}
    if user is None:
        records = store.list_tokens()
    else:
        found = find_user(store, user)
        if found is None:
            raise user_not_found(user)
        records = store.list_user_tokens(found.id)
    return [token_public(r, users.get(r.user_id) if r.user_id else None) for r in records]


@router.delete(
    "/{token_id}",
    responses=errors(404, 409, notes={404: "unknown token", 409: "the last admin token"}),
)
def revoke_token(
    token_id: str, request: Request, store: StoreDep, principal: AnyToken
) -> TokenPublic:
    """Revoke a token: any with ``admin``, or the calling token itself."""
    if not principal.is_admin and token_id != principal.token_id:
        detail = "Revoking another token needs the 'admin' scope."
        audit.record_denied(request, principal, "token.revoke", token_id, detail)
        raise HTTPException(status_code=403, detail=detail)
    record = store.get_token(token_id)
    if record is None:
        raise not_found("Token", token_id)
    _keep_an_admin(store, record)
    revoked = store.revoke_token(token_id)
    if revoked is None:  # gone since it was read
        raise not_found("Token", token_id)
    cache: TokenCache = request.app.state.token_cache
    cache.evict_token(token_id)
    audit.record(request, principal, "token.revoke", token_id)
    user = store.get_user(revoked.user_id) if revoked.user_id is not None else None
    return token_public(revoked, user)


def _keep_an_admin(store: StateStore, record: TokenRecord) -> None:
    """409 when ``record`` is the last usable admin token: revoking it would leave nobody
    able to manage users and tokens."""
    if Scope.admin not in record.scopes or not _usable(record):
        return
    others = [t for t in store.list_tokens() if t.id != record.id and Scope.admin in t.scopes]
    if not any(_usable(t) and store.get_user(t.user_id or "") is not None for t in others):
        raise HTTPException(
            status_code=409,
            detail=f"Cannot revoke token {record.id}: it is the last active admin token; "
            "create another admin token first.",
        )


def _usable(token: TokenRecord) -> bool:
    now = utcnow()
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)
