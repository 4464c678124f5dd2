"""Bearer tokens: random secrets, stored hashed, with scopes, expiry and revocation.

The first start of a server (no token in the database) creates an admin token -- the value
of ``FEDSILO_ADMIN_TOKEN`` when set, a fresh random one otherwise -- prints it once and writes
it to ``<data_dir>/admin_token`` with mode 0600.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select

from fedsilo.server.db import Database
from fedsilo.server.tables import TokenRow, utcnow
from fedsilo.wire import TokenCreated, TokenPublic

__all__ = [
    "AuthToken",
    "CurrentToken",
    "TokenCache",
    "bootstrap_admin_token",
    "hash_token",
    "issue_token",
]

TOKEN_PREFIX = "fs_"
# last_used_at is bookkeeping, not security: writing it on every long-poll would put a
# database write in the round's hot path, so it is refreshed at most once a minute.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AuthToken:
    """The token a request authenticated with."""

    id: str
    name: str
    scopes: tuple[str, ...]


def issue_token(
    db: Database,
    name: str,
    scopes: list[str],
    expires_in: timedelta | None,
    secret: str | None = None,
) -> TokenCreated:
    """Store a new token (hashed) and return it with its secret, which is never stored."""
    secret = secret or new_secret()
    now = utcnow()
    row = TokenRow(
        id=secrets.token_hex(6),
        name=name,
        token_hash=hash_token(secret),
        scopes=list(scopes),
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    with db.session() as s:
        s.add(row)
    return TokenCreated(**token_public(row).model_dump(), token=secret)


def token_public(row: TokenRow) -> TokenPublic:
    return TokenPublic(
        id=row.id,
        name=row.name,
        scopes=list(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def bootstrap_admin_token(db: Database, data_dir: Path, configured: str | None) -> str | None:
    """Create the admin token on first start; return the secret when one was created."""
    with db.session() as s:
        count = s.scalar(select(func.count()).select_from(TokenRow)) or 0
        known = (
            configured is not None
            and s.scalar(select(TokenRow.id).where(TokenRow.token_hash == hash_token(configured)))
            is not None
        )
    if known or (count and configured is None):
        return None
    # The bootstrap token never expires: an expired only-admin would lock the operator out.
    created = issue_token(db, "admin", ["admin"], None, secret=configured)
    path = data_dir / "admin_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(created.token + "\n")
    os.chmod(path, 0o600)
    if configured is None:
        print(
            f"fedsilo: admin token (shown once; also in {path}, mode 0600): {created.token}",
            file=sys.stderr,
            flush=True,
        )
    return created.token


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class TokenCache:
    """Tokens verified recently, so the round's hot path (long-polls and replies) does not
    read the token table on every request.

    An entry lives for ``_LAST_USED_RESOLUTION``; expiry is still checked on every hit, and a
    revocation through this server's API evicts the token at once. A revocation written to
    the database by another process takes effect within the entry's lifetime.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[AuthToken, datetime | None, datetime]] = {}

    def get(self, token_hash: str, now: datetime) -> AuthToken | None:
        with self._lock:
            entry = self._entries.get(token_hash)
        if entry is None:
            return None
        token, expires_at, checked_at = entry
        if now - checked_at > _LAST_USED_RESOLUTION or (
            expires_at is not None and expires_at <= now
        ):
            return None
        return token

    def put(self, token_hash: str, token: AuthToken, expires_at: datetime | None) -> None:
        with self._lock:
            self._entries[token_hash] = (token, expires_at, utcnow())

    def evict(self, token_id: str) -> None:
        with self._lock:
            for key in [k for k, v in self._entries.items() if v[0].id == token_id]:
                del self._entries[key]


async def require_token(request: Request) -> AuthToken:
    """FastAPI dependency: the request's valid bearer token, or 401 with a stable detail.

    Async so that a cached token costs no thread hop (FastAPI runs sync dependencies in its
    thread pool); only a cache miss goes to the database, in the pool.
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorized("Malformed Authorization header: expected 'Bearer <token>'.")
    cache: TokenCache = request.app.state.token_cache
    token_hash = hash_token(secret.strip())
    now = utcnow()
    cached = cache.get(token_hash, now)
    if cached is not None:
        return cached
    db: Database = request.app.state.db
    return await run_in_threadpool(_verify, db, cache, token_hash, now)


def _verify(db: Database, cache: TokenCache, token_hash: str, now: datetime) -> AuthToken:
    with db.session() as s:
        row = s.scalar(select(TokenRow).where(TokenRow.token_hash == token_hash))
        if row is None:
            raise _unauthorized("Invalid token.")
        if row.revoked_at is not None:
            raise _unauthorized("Token has been revoked.")
        if row.expires_at is not None and row.expires_at <= now:
            raise _unauthorized("Token has expired.")
        # Refreshed when the cache entry is renewed, i.e. at most once a resolution period.
        row.last_used_at = now
        token = AuthToken(id=row.id, name=row.name, scopes=tuple(row.scopes))
        cache.put(token_hash, token, row.expires_at)
        return token


CurrentToken = Annotated[AuthToken, Depends(require_token)]


def expiry_from_days(days: float | None) -> timedelta | None:
    return timedelta(days=days) if days is not None else None


def is_expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at <= utcnow()
