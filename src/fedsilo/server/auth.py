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

from fedsilo.server.state import StateStore, TokenRecord, utcnow
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
    store: StateStore,
    name: str,
    scopes: list[str],
    expires_in: timedelta | None,
    secret: str | None = None,
) -> TokenCreated:
    """Store a new token (hashed) and return it with its secret, which is never stored."""
    secret = secret or new_secret()
    now = utcnow()
    token = TokenRecord(
        id=secrets.token_hex(6),
        name=name,
        token_hash=hash_token(secret),
        scopes=tuple(scopes),
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    store.add_token(token)
    return TokenCreated(**token_public(token).model_dump(), token=secret)


def token_public(token: TokenRecord) -> TokenPublic:
    return TokenPublic(
        id=token.id,
        name=token.name,
        scopes=list(token.scopes),
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )


def bootstrap_admin_token(store: StateStore, data_dir: Path, configured: str | None) -> str | None:
    """Create the admin token on first start; return the secret when one was created."""
    known = configured is not None and store.get_token_by_hash(hash_token(configured)) is not None
    if known or (configured is None and store.count_tokens()):
        return None
    # The bootstrap token never expires: an expired only-admin would lock the operator out.
    created = issue_token(store, "admin", ["admin"], None, secret=configured)
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
    store: StateStore = request.app.state.store
    return await run_in_threadpool(_verify, store, cache, token_hash, now)


def _verify(store: StateStore, cache: TokenCache, token_hash: str, now: datetime) -> AuthToken:
    record = store.get_token_by_hash(token_hash)
    if record is None:
        raise _unauthorized("Invalid token.")
    if record.revoked_at is not None:
        raise _unauthorized("Token has been revoked.")
    if record.expires_at is not None and record.expires_at <= now:
        raise _unauthorized("Token has expired.")
    # Refreshed when the cache entry is renewed, i.e. at most once a resolution period.
    store.touch_token(record.id, at=now)
    token = AuthToken(id=record.id, name=record.name, scopes=record.scopes)
    cache.put(token_hash, token, record.expires_at)
    return token


CurrentToken = Annotated[AuthToken, Depends(require_token)]


def expiry_from_days(days: float | None) -> timedelta | None:
    return timedelta(days=days) if days is not None else None


def is_expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at <= utcnow()
