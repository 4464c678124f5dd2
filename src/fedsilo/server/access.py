"""Who may call what: the principal a request acts as, and each route's declared requirement.

Every route of the API declares its requirement as one FastAPI dependency built here:

- :func:`public` -- no token (``/healthz`` only);
- :func:`authenticated` -- any valid token, whatever its scopes;
- :func:`allow` ``(*scopes)`` -- a token holding one of ``scopes`` (``admin`` holds all);
- :func:`session_access` ``(any_scope, own_scope)`` -- a session route: the token holds
  ``any_scope`` (any user's session) or ``own_scope`` and the session's owner is the token's
  user. The dependency loads the session (404 if unknown) and hands it to the route.

Each returns a :class:`Requirement` whose ``scopes`` say what it asks for; the route-by-scope
matrix test walks the app's routes and fails on one without a requirement. A token lacking
the scope gets 403 whose ``detail`` names the scope(s); a refused call on a session (and on
an :func:`allow` given an ``action``) is audited (``outcome="denied"``). An unauthenticated
call gets 401 before any body is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from fedsilo.scopes import Scope
from fedsilo.server.state import SessionRecord, StateStore

__all__ = [
    "Principal",
    "Requirement",
    "SessionGrant",
    "allow",
    "authenticated",
    "public",
    "requirement_of",
    "session_access",
]


@dataclass(frozen=True)
class Principal:
    """The identity a request acts as: a token and the user it belongs to."""

    token_id: str
    token_name: str
    user_id: str
    user_name: str
    user_type: str
    scopes: frozenset[Scope]

    def has(self, scope: Scope) -> bool:
        """Whether the token carries ``scope`` (``admin`` carries every scope)."""
        return scope in self.scopes or Scope.admin in self.scopes

    @property
    def is_admin(self) -> bool:
        return Scope.admin in self.scopes


@dataclass(frozen=True)
class SessionGrant:
    """What :func:`session_access` hands a route: who calls, and the session it may act on."""

    principal: Principal
    session: SessionRecord


def _scope_list(scopes: tuple[Scope, ...]) -> str:
    return " or ".join(f"'{s}'" for s in scopes)


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status_code=403, detail=detail)


class Requirement:
    """A route's declared access requirement; a FastAPI dependency (an async callable).

    ``kind`` is ``public``, ``authenticated``, ``scopes`` or ``session``; ``scopes`` the
    scopes any of which admits a call (empty for public/authenticated); ``own_scope`` the
    owner-only scope of a session requirement.
    """

    #: the dependency itself (each kind's own signature, which FastAPI reads)
    __call__: Callable[..., Awaitable[Any]]

    def __init__(
        self,
        kind: str,
        scopes: tuple[Scope, ...] = (),
        own_scope: Scope | None = None,
        action: str = "access",
    ) -> None:
        self.kind = kind
        self.scopes = scopes
        self.own_scope = own_scope
        self.action = action
        #: whether a refusal is written to the audit log (always for session routes)
        self.audited = kind == "session"

    def __repr__(self) -> str:
        own = f", own={self.own_scope}" if self.own_scope else ""
        return f"Requirement({self.kind}, {list(map(str, self.scopes))}{own})"


class _Public(Requirement):
    async def __call__(self) -> None:
        return None


class _Authenticated(Requirement):
    async def __call__(self, request: Request) -> Principal:
        from fedsilo.server.auth import authenticate

        return await authenticate(request)


async def _refuse(
    request: Request, principal: Principal, action: str, target: str, detail: str
) -> HTTPException:
    """Audit a refusal (off the event loop: it writes) and build its 403."""
    from fedsilo.server.audit import record_denied

    await run_in_threadpool(record_denied, request, principal, action, target, detail)
    return forbidden(detail)


class _Allow(Requirement):
    async def __call__(self, request: Request) -> Principal:
        from fedsilo.server.auth import authenticate

        principal = await authenticate(request)
        if not any(principal.has(scope) for scope in self.scopes):
            detail = f"This call needs the {_scope_list(self.scopes)} scope."
            if self.audited:
                raise await _refuse(request, principal, self.action, request.url.path, detail)
            raise forbidden(detail)
        return principal


class _SessionAccess(Requirement):
    async def __call__(self, request: Request, session_id: str) -> SessionGrant:
        from fedsilo.server.auth import authenticate

        principal = await authenticate(request)
        action = self.action
        # Scope first: a token without either scope learns nothing about which ids exist.
        if not any(principal.has(s) for s in self.scopes) and not (
            self.own_scope is not None and principal.has(self.own_scope)
        ):
            needed = (*self.scopes, *((self.own_scope,) if self.own_scope else ()))
            detail = f"This call needs the {_scope_list(needed)} scope."
            raise await _refuse(request, principal, action, session_id, detail)
        store: StateStore = request.app.state.store
        record = await run_in_threadpool(store.get_session, session_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"Session {session_id} not found.")
        if any(principal.has(s) for s in self.scopes):
            return SessionGrant(principal, record)
        if record.owner_id is not None and record.owner_id == principal.user_id:
            return SessionGrant(principal, record)
        detail = (
            f"Session {session_id} belongs to another user: '{self.own_scope}' acts only on "
            f"your own sessions; this call on any session needs {_scope_list(self.scopes)}."
        )
        raise await _refuse(request, principal, action, session_id, detail)


def public() -> Requirement:
    """No token needed (health checks only)."""
    return _Public("public")


def authenticated() -> Requirement:
    """Any valid token; the route returns only what that token may see."""
    return _Authenticated("authenticated")


def allow(*scopes: Scope, action: str | None = None) -> Requirement:
    """A token holding one of ``scopes`` (``admin`` holds every scope). With ``action``
    (``session.create``...), a refusal is audited under that action, the path as target."""
    if not scopes:
        raise ValueError("allow() needs at least one scope; use authenticated() for any token")
    requirement = _Allow("scopes", tuple(scopes), action=action or "access")
    requirement.audited = action is not None
    return requirement


def session_access(
    any_scope: Scope | tuple[Scope, ...], own_scope: Scope | None, action: str
) -> Requirement:
    """A route on ``/sessions/{session_id}``: ``any_scope`` (one, or a tuple of which any
    admits) acts on every user's session, ``own_scope`` only on sessions the token's user
    owns. ``action`` names the call in the audit log when it is refused (``session.read``,
    ``session.cancel``, ``model.download``...).
    """
    scopes = any_scope if isinstance(any_scope, tuple) else (any_scope,)
    return _SessionAccess("session", scopes, own_scope, action)


def requirement_of(dependant: Any) -> list[Requirement]:
    """Every :class:`Requirement` among a route's dependencies (recursively); the matrix test
    and the OpenAPI description use it."""
    found: list[Requirement] = []
    stack = [dependant]
    while stack:
        current = stack.pop()
        if isinstance(current.call, Requirement):
            found.append(current.call)
        stack.extend(current.dependencies)
    return found
