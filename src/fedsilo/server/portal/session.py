"""Portal sign-in sessions: a signed, HttpOnly, SameSite=Strict cookie naming a server-side
session, and the CSRF tokens of its forms.

Why a server-side session rather than the token in the cookie: the browser never holds the
API token after sign-in (the cookie names a random session id, signed with HMAC-SHA256 under
a key kept in ``<data_dir>/portal_key``, mode 0600), and signing out ends the session on the
server, so a copied cookie is useless afterwards. The token itself is checked on every
request by the API's own :func:`~fedsilo.server.auth.authenticate` (revoked, expired, deleted
user: refused at once). Sessions live in memory: a restarted server signs everyone out.

CSRF: every form of a signed-in page carries the session's synchronizer token (``csrf``),
compared in constant time. The sign-in form, before any session exists, carries
``HMAC(key, "signin:" + nonce)`` where the nonce is a second short-lived cookie (a signed
double submit), so another site cannot sign a browser in under its own token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "COOKIE",
    "SIGNIN_COOKIE",
    "PortalSession",
    "PortalSessions",
    "cookie_header",
    "load_key",
]

#: the session cookie's name
COOKIE = "fedsilo_portal"
#: the sign-in form's nonce cookie
SIGNIN_COOKIE = "fedsilo_signin"
#: a session unused this long is forgotten (the token's own expiry applies besides)
IDLE_S = 8 * 3600.0
#: the most sessions kept; past that the longest-idle one is dropped (bounded memory)
MAX_SESSIONS = 10_000
KEY_FILE = "portal_key"


def load_key(data_dir: Path) -> bytes:
    """The portal's signing key: ``<data_dir>/portal_key`` (32 random bytes, 0600), created
    on first use. Kept across restarts so a sign-in form rendered before one still works."""
    path = data_dir / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    os.chmod(path, 0o600)
    return key


def _mac(key: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class PortalSession:
    """One signed-in browser: the API token it acts with, and its forms' CSRF token."""

    id: str
    secret: str
    user_name: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class PortalSessions:
    """The signed-in sessions (thread-safe; bounded; idle ones expire)."""

    def __init__(self, key_source: Path | bytes) -> None:
        self._key_source = key_source
        self._key: bytes | None = key_source if isinstance(key_source, bytes) else None
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, PortalSession] = OrderedDict()

    @property
    def key(self) -> bytes:
        # Read lazily: the data dir is created when the app starts, after it is built.
        if self._key is None:
            assert isinstance(self._key_source, Path)
            self._key = load_key(self._key_source)
        return self._key

    # ------------------------------------------------------------------ sessions

    def create(self, secret: str, user_name: str) -> tuple[PortalSession, str]:
        """A new session acting with ``secret``; returns it and its cookie value."""
        session = PortalSession(id=secrets.token_urlsafe(32), secret=secret, user_name=user_name)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session, self.cookie_value(session.id)

    def cookie_value(self, session_id: str) -> str:
        return f"{session_id}.{_mac(self.key, 'session', session_id)}"

    def resolve(self, cookie: str | None, now: float | None = None) -> PortalSession | None:
        """The live session a cookie names; None for a missing, forged, ended or idle one."""
        if not cookie or "." not in cookie:
            return None
        session_id, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, _mac(self.key, "session", session_id)):
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > IDLE_S:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    # ------------------------------------------------------------------ sign-in form

    def signin_csrf(self, nonce: str) -> str:
        return _mac(self.key, "signin", nonce)

    def signin_ok(self, nonce: str | None, presented: str | None) -> bool:
        if not nonce or not presented:
            return False
        return hmac.compare_digest(self.signin_csrf(nonce), presented)


def cookie_header(name: str, value: str, *, secure: bool, max_age: int | None = None) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, Path=/ (Secure over HTTPS);
    ``max_age=0`` clears it."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
