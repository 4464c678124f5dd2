"""Bearer tokens and the identity behind them: who a request acts as.

A token is a random secret stored only as its SHA-256 hash; a request is matched to its token
by looking that hash up (never by comparing secrets), and the token to its user. The result
is a :class:`~fedsilo.server.access.Principal`, which the routes' requirements
(:mod:`fedsilo.server.access`) check for scopes and session ownership.

:func:`authenticate` answers 401 with a stable ``detail`` -- ``Missing bearer token...``,
``Malformed Authorization header...``, ``Invalid token.``, ``The token's user was deleted.``,
``Token has been revoked.``, ``Token has expired.`` -- and 429 with ``Retry-After`` once an
address made :data:`FAILURE_LIMIT` failed attempts within :data:`FAILURE_WINDOW_S`; a secret is
never put in a log line or an error detail.

The first start of a server creates the ``admin`` user (type ``human``) and the admin token
tied to it -- the value of ``FEDSILO_ADMIN_TOKEN`` when set, a fresh random one otherwise --
written to ``<data_dir>/admin_token`` with mode 0600. A generated token is printed to stderr
only when stderr is a terminal; otherwise (a service, a log file) the line names the file and
never the secret.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from fedsilo.scopes import Scope
from fedsilo.server.access import Principal
from fedsilo.server.state import StateStore, TokenRecord, UserRecord, utcnow
from fedsilo.wire import TokenCreated, TokenPublic

__all__ = [
    "ADMIN_USER",
    "FAILURE_LIMIT",
    "FAILURE_WINDOW_S",
    "FailureLimiter",
    "TokenCache",
    "authenticate",
    "bootstrap_admin",
    "client_address",
    "hash_token",
    "issue_token",
    "new_secret",
    "new_user_id",
    "token_public",
]

logger = logging.getLogger("fedsilo.server")

TOKEN_PREFIX = "fs_"
#: the name of the user the first admin token belongs to
ADMIN_USER = "admin"
#: failed authentications one address may make per window before it is answered 429
FAILURE_LIMIT = 20
FAILURE_WINDOW_S = 60.0
#: addresses the limiter remembers at most; past that the longest-quiet one is forgotten, so
#: a flood from many addresses costs bounded memory (about 100 bytes an address)
MAX_TRACKED_ADDRESSES = 10_000
# A verified token is trusted from memory this long: the round's hot path (long-polls and
# replies) then reads no table and takes no thread hop. last_used_at is written when the entry
# is renewed, i.e. at most once a period.
_CACHE_TTL = timedelta(seconds=60)

MISSING = "Missing bearer token: send 'Authorization: Bearer <token>'."
MALFORMED = "Malformed Authorization header: expected 'Bearer <token>'."
INVALID = "Invalid token."
USER_DELETED = "The token's user was deleted."
REVOKED = "Token has been revoked."
EXPIRED = "Token has expired."
TOO_MANY_FAILURES = (
    "Too many failed authentications from this address; retry after the Retry-After seconds."
)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a token (or a participant credential) is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    """A fresh 256-bit secret, prefixed so a leaked one is recognisable in a scan."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_user_id(workspace: str) -> str:
    """A generated user id, ``<10 hex>@<workspace>`` (the seed's email-like id)."""
    return f"{secrets.token_hex(5)}@{workspace}"


# ---------------------------------------------------------------------- issuing


def issue_token(
    store: StateStore,
    user: UserRecord,
    name: str,
    scopes: Sequence[Scope],
    expires_in: timedelta | None,
    secret: str | None = None,
) -> TokenCreated:
    """Store a new token of ``user`` (hashed) and return it with its secret, which is never
    stored. Limits on ``scopes`` and ``expires_in`` are the caller's (the tokens router)."""
    secret = secret or new_secret()
    now = utcnow()
    token = TokenRecord(
        id=secrets.token_hex(6),
        name=name,
        token_hash=hash_token(secret),
        scopes=tuple(str(s) for s in scopes),
        user_id=user.id,
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    store.add_token(token)
    return TokenCreated(**token_public(token, user).model_dump(), token=secret)


def token_public(token: TokenRecord, user: UserRecord | None) -> TokenPublic:
    """What the API shows of a token: never its secret nor its hash."""
    return TokenPublic(
        id=token.id,
        name=token.name,
        scopes=list(token.scopes),
        user_id=token.user_id,
        user_name=user.name if user is not None else None,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )


def _admin_user(store: StateStore, workspace: str) -> UserRecord:
    """The ``admin`` user, created (type ``human``) when there is none."""
    user = store.get_user_by_name(ADMIN_USER)
    if user is None:
        user = UserRecord(
            id=new_user_id(workspace), name=ADMIN_USER, user_type="human", created_at=utcnow()
        )
        store.add_user(user)
    return user


def bootstrap_admin(
    store: StateStore, data_dir: Path, configured: str | None, workspace: str
) -> str | None:
    """On start: make sure the admin user and token exist; return the secret when created.

    A database of an earlier version (tokens, no users) gets the ``admin`` user, and every
    token without a user becomes that user's. The admin token is created on first start
    (no token stored), or when ``configured`` (``FEDSILO_ADMIN_TOKEN``) is not stored yet.
    """
    if not store.list_users():
        store.adopt_tokens(_admin_user(store, workspace).id)
    known = configured is not None and store.get_token_by_hash(hash_token(configured)) is not None
    if known or (configured is None and store.count_tokens()):
        return None
    # The bootstrap token never expires: an expired only-admin would lock the operator out.
    admin = _admin_user(store, workspace)
    created = issue_token(store, admin, ADMIN_USER, [Scope.admin], None, secret=configured)
    path = data_dir / "admin_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(created.token + "\n")
    os.chmod(path, 0o600)
    if configured is None:
        # The secret only to a person at a terminal: a service's stderr ends up in its logs,
        # so there the line names the file and never the token.
        if sys.stderr.isatty():
            print(
                f"fedsilo: admin token (shown once; also in {path}, mode 0600): {created.token}",
                file=sys.stderr,
                flush=True,
            )
        else:
            # A log record, so it comes out in the server's log format (text or JSON).
            logger.warning("admin token created in %s (mode 0600)", path)
    return created.token


# ---------------------------------------------------------------- authenticating


class TokenCache:
    """Principals verified recently, by token hash, so a cache hit costs no table read.

    An entry lives for ``_CACHE_TTL``; expiry is still checked on every hit, and revoking a
    token or deleting a user through this server's API evicts at once. A revocation written
    to the database by another process takes effect within an entry's lifetime.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Principal, datetime | None, datetime]] = {}

    def get(self, token_hash: str, now: datetime) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token_hash)
        if entry is None:
            return None
        principal, expires_at, checked_at = entry
        if now - checked_at > _CACHE_TTL or (expires_at is not None and expires_at <= now):
            return None
        return principal

    def put(self, token_hash: str, principal: Principal, expires_at: datetime | None) -> None:
        with self._lock:
            self._entries[token_hash] = (principal, expires_at, utcnow())

    def evict_token(self, token_id: str) -> None:
        """Forget a token (it was revoked)."""
        with self._lock:
            for key in [k for k, v in self._entries.items() if v[0].token_id == token_id]:
                del self._entries[key]

    def evict_user(self, user_id: str) -> None:
        """Forget every token of a user (the user was deleted)."""
        with self._lock:
            for key in [k for k, v in self._entries.items() if v[0].user_id == user_id]:
                del self._entries[key]


class FailureLimiter:
    """Failed authentications per client address, in fixed windows, in bounded memory.

    An address that failed ``limit`` times within ``window_s`` seconds of its first failure
    is refused until that window ends. At most ``max_addresses`` are remembered, the least
    recently failing forgotten first.
    """

    def __init__(
        self,
        limit: int = FAILURE_LIMIT,
        window_s: float = FAILURE_WINDOW_S,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._lock = threading.Lock()
        #: address -> (monotonic time of the window's first failure, failures in the window)
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str, now: float) -> int | None:
        """Whole seconds until ``address`` may try again, or ``None`` when it may now."""
        with self._lock:
            entry = self._failures.get(address)
        if entry is None:
            return None
        started, count = entry
        remaining = started + self.window_s - now
        if count < self.limit or remaining <= 0:
            return None
        return max(1, math.ceil(remaining))

    def fail(self, address: str, now: float) -> None:
        with self._lock:
            started, count = self._failures.pop(address, (now, 0))
            if now - started >= self.window_s:
                started, count = now, 0
            self._failures[address] = (started, count + 1)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()


def client_address(request: Request) -> str:
    """The caller's address as the server sees it (behind a proxy: what the proxy passes
    through uvicorn's ``--forwarded-allow-ips``)."""
    return request.client.host if request.client is not None else "unknown"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    """The request's principal, or 401 with a stable detail (429 while its address is
    limited).

    Async so that a cached token costs no thread hop (FastAPI runs sync dependencies in its
    thread pool); only a cache miss goes to the state store, in the pool.
    """
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized(MISSING)
    limiter: FailureLimiter = request.app.state.auth_limiter
    address = client_address(request)
    wait = limiter.retry_after(address, time.monotonic())
    if wait is not None:  # refused before the token is even hashed
        raise HTTPException(
            status_code=429, detail=TOO_MANY_FAILURES, headers={"Retry-After": str(wait)}
        )
    scheme, _, secret = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthorized(MALFORMED)
        token_hash = hash_token(secret.strip())
        now = utcnow()
        cache: TokenCache = request.app.state.token_cache
        cached = cache.get(token_hash, now)
        if cached is not None:
            return cached
        store: StateStore = request.app.state.store
        return await run_in_threadpool(_verify, store, cache, token_hash, now)
    except HTTPException:
        limiter.fail(address, time.monotonic())
        raise


def _verify(store: StateStore, cache: TokenCache, token_hash: str, now: datetime) -> Principal:
    record = store.get_token_by_hash(token_hash)
    if record is None:
        raise _unauthorized(INVALID)
    user = store.get_user(record.user_id) if record.user_id is not None else None
    # Before "revoked": deleting a user also revokes its tokens, and the caller should learn
    # which of the two happened.
    if user is None or not user.active:
        raise _unauthorized(USER_DELETED)
    if record.revoked_at is not None:
        raise _unauthorized(REVOKED)
    if record.expires_at is not None and record.expires_at <= now:
        raise _unauthorized(EXPIRED)
    store.touch_token(record.id, at=now)
    principal = Principal(
        token_id=record.id,
        token_name=record.name,
        user_id=user.id,
        user_name=user.name,
        user_type=user.user_type,
        # A scope this version does not know (written by a newer one) grants nothing here.
        scopes=frozenset(Scope(s) for s in record.scopes if s in Scope.__members__),
    )
    cache.put(token_hash, principal, record.expires_at)
    return principal
