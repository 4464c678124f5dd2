"""Tokens: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select

from fedsilo.server.api.deps import DbDep, not_found
from fedsilo.server.auth import CurrentToken, expiry_from_days, issue_token, token_public
from fedsilo.server.tables import TokenRow, utcnow
from fedsilo.wire import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


def _require_admin(token: CurrentToken) -> None:
    if "admin" not in token.scopes:
        raise HTTPException(status_code=403, detail="Managing tokens needs the 'admin' scope.")


@router.post("", status_code=201)
def create_token(body: TokenCreate, db: DbDep, token: CurrentToken) -> TokenCreated:
    _require_admin(token)
    return issue_token(db, body.name, body.scopes, expiry_from_days(body.expires_in_days))


@router.get("")
def list_tokens(db: DbDep, token: CurrentToken) -> list[TokenPublic]:
    _require_admin(token)
    with db.session() as s:
        rows = s.scalars(select(TokenRow).order_by(TokenRow.created_at)).all()
        return [token_public(r) for r in rows]


@router.delete("/{token_id}")
def revoke_token(token_id: str, db: DbDep, token: CurrentToken, request: Request) -> TokenPublic:
    _require_admin(token)
    with db.session() as s:
        row = s.get(TokenRow, token_id)
        if row is None:
            raise not_found("Token", token_id)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        public = token_public(row)
    request.app.state.token_cache.evict(token_id)
    return public


__all__ = ["router"]
