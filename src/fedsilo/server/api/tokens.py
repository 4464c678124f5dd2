"""Tokens: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from fedsilo.server.api.deps import StoreDep, not_found
from fedsilo.server.auth import CurrentToken, expiry_from_days, issue_token, token_public
from fedsilo.wire import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


def _require_admin(token: CurrentToken) -> None:
    if "admin" not in token.scopes:
        raise HTTPException(status_code=403, detail="Managing tokens needs the 'admin' scope.")


@router.post("", status_code=201)
def create_token(body: TokenCreate, store: StoreDep, token: CurrentToken) -> TokenCreated:
    _require_admin(token)
    return issue_token(store, body.name, body.scopes, expiry_from_days(body.expires_in_days))


@router.get("")
def list_tokens(store: StoreDep, token: CurrentToken) -> list[TokenPublic]:
    _require_admin(token)
    return [token_public(record) for record in store.list_tokens()]


@router.delete("/{token_id}")
def revoke_token(
    token_id: str, store: StoreDep, token: CurrentToken, request: Request
) -> TokenPublic:
    _require_admin(token)
    record = store.revoke_token(token_id)
    if record is None:
        raise not_found("Token", token_id)
    request.app.state.token_cache.evict(token_id)
    return token_public(record)


__all__ = ["router"]
