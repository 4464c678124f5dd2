"""FastAPI dependencies shared by the routers, as ``Annotated`` aliases.

The access aliases are the one place each route's requirement is spelled (see
:mod:`fedsilo.server.access`): a route takes ``AdminToken``, ``SessionRead`` ... as a
parameter and so declares what it needs; the route-by-scope matrix test reads them back.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from fedsilo.scopes import Scope
from fedsilo.server.access import (
    Principal,
    SessionGrant,
    allow,
    authenticated,
    session_access,
)
from fedsilo.server.auth import hash_token
from fedsilo.server.engine import SessionEngine
from fedsilo.server.state import ArtifactStore, ParticipantRecord, SessionRecord, StateStore
from fedsilo.wire import PARTICIPANT_HEADER, ErrorBody

__all__ = [
    "ACCESS_RESPONSES",
    "BODY_RESPONSES",
    "ERROR_DESCRIPTIONS",
    "AdminToken",
    "AnyToken",
    "ArtifactsDep",
    "ClientToken",
    "EngineDep",
    "InitialModelUpload",
    "ModelDownload",
    "ParticipantAuth",
    "ParticipantCache",
    "ParticipantDep",
    "SessionCancel",
    "SessionCreator",
    "SessionDelete",
    "SessionLister",
    "SessionRead",
    "SessionStart",
    "SessionView",
    "StoreDep",
    "errors",
    "get_session_record",
    "not_found",
    "require_participant",
]


def get_store(request: Request) -> StateStore:
    store: StateStore = request.app.state.store
    return store


def get_artifacts(request: Request) -> ArtifactStore:
    artifacts: ArtifactStore = request.app.state.artifacts
    return artifacts


def get_engine(request: Request) -> SessionEngine:
    engine: SessionEngine = request.app.state.engine
    return engine


StoreDep = Annotated[StateStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
EngineDep = Annotated[SessionEngine, Depends(get_engine)]


# ------------------------------------------------------------------------ access

#: what each error status means on this API; every error body is :class:`ErrorBody`
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "the body is not what its Content-Type / Content-Length announce (not JSON text, "
    "or a frame shorter or longer than declared)",
    401: "no valid token: missing, malformed, unknown, revoked, expired, or its user was "
    "deleted (stable `detail`)",
    403: "the token lacks the scope `detail` names, or the session is another user's",
    404: "what the path names does not exist",
    409: "the call conflicts with the current state; `detail` says how",
    413: "the body exceeds this route's limit (max_json_body_bytes, or max_frame_body_bytes "
    "for frames); `detail` names it",
    422: "invalid input: `detail` names each field, the rule it breaks and the value given",
    429: "too many failed authentications from this address; see `Retry-After`",
    503: "the state store cannot be written or read now (e.g. a full disk); retry later",
}


def errors(*codes: int, notes: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error ``codes``: the one :class:`ErrorBody` schema, and the
    description of :data:`ERROR_DESCRIPTIONS` (or the route's own note)."""
    notes = notes or {}
    return {
        code: {"model": ErrorBody, "description": notes.get(code, ERROR_DESCRIPTIONS[code])}
        for code in codes
    }


#: what every authenticated route may answer besides its own responses (for the OpenAPI)
ACCESS_RESPONSES = errors(401, 403, 422, 429, 503)
#: what a route with a request body may answer besides (the guard, the body's parsing)
BODY_RESPONSES = errors(400, 413)

#: any valid token (what the route shows depends on it)
AnyToken = Annotated[Principal, Depends(authenticated())]
#: users, tokens, the audit log
AdminToken = Annotated[Principal, Depends(allow(Scope.admin, action="admin"))]
#: a silo client: join sessions (poll and reply also need the participant credential)
ClientToken = Annotated[Principal, Depends(allow(Scope.client))]
SessionCreator = Annotated[Principal, Depends(allow(Scope.create_session, action="session.create"))]
#: list sessions: every one with read_all_session, the user's own with read_user_session
SessionLister = Annotated[
    Principal,
    Depends(allow(Scope.read_all_session, Scope.read_user_session, action="session.list")),
]
#: a session's description and participants: also what a client reads to join it
SessionView = Annotated[
    SessionGrant,
    Depends(
        session_access(
            (Scope.read_all_session, Scope.client), Scope.read_user_session, "session.read"
        )
    ),
]
#: a session's results: metrics and logs
SessionRead = Annotated[
    SessionGrant,
    Depends(session_access(Scope.read_all_session, Scope.read_user_session, "session.read")),
]
SessionStart = Annotated[
    SessionGrant, Depends(session_access(Scope.start_session, None, "session.start"))
]
SessionCancel = Annotated[
    SessionGrant,
    Depends(session_access(Scope.admin, Scope.cancel_user_session, "session.cancel")),
]
SessionDelete = Annotated[
    SessionGrant,
    Depends(session_access(Scope.admin, Scope.delete_user_session, "session.delete")),
]
ModelDownload = Annotated[
    SessionGrant,
    Depends(session_access(Scope.model_download, Scope.user_model_download, "model.download")),
]
#: upload a session's initial model: its owner's create_session, or admin on any session
InitialModelUpload = Annotated[
    SessionGrant,
    Depends(session_access(Scope.admin, Scope.create_session, "session.initial_model")),
]


def not_found(what: str, ident: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} {ident} not found.")


def get_session_record(store: StateStore, session_id: str) -> SessionRecord:
    """The session, or 404 with the stable ``Session <id> not found.`` detail."""
    record = store.get_session(session_id)
    if record is None:
        raise not_found("Session", session_id)
    return record


# ------------------------------------------------------------ participant credentials


@dataclass(frozen=True)
class ParticipantAuth:
    """A participant call whose credential matched: who is calling, in which session."""

    session_id: str
    participant_id: str
    client_name: str


class ParticipantCache:
    """participant id -> (session id, client name, credential hash), filled on first use.

    A credential never changes once issued, so entries need no expiry; a deleted session's
    participants are dropped with :meth:`forget_session`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, str, str]] = {}

    def get(self, participant_id: str) -> tuple[str, str, str] | None:
        with self._lock:
            return self._entries.get(participant_id)

    def put(self, participant_id: str, session_id: str, client_name: str, digest: str) -> None:
        with self._lock:
            self._entries[participant_id] = (session_id, client_name, digest)

    def forget_session(self, session_id: str) -> None:
        with self._lock:
            for pid in [p for p, e in self._entries.items() if e[0] == session_id]:
                del self._entries[pid]


def _forbidden(participant_id: str) -> HTTPException:
    return HTTPException(
        status_code=403,
        detail=f"The participant credential is missing or does not belong to participant "
        f"{participant_id}; send the credential its join returned in the {PARTICIPANT_HEADER} "
        "header.",
    )


def _load_participant(store: StateStore, session_id: str, participant_id: str) -> ParticipantRecord:
    record = store.get_participant(participant_id)
    if record is None or record.session_id != session_id:
        raise HTTPException(
            status_code=404,
            detail=f"Participant {participant_id} not found in session {session_id}.",
        )
    return record


async def require_participant(
    request: Request, session_id: str, participant_id: str
) -> ParticipantAuth:
    """The caller must present ``participant_id``'s own credential (403 otherwise).

    Async, with an in-memory cache, so the round's hot path takes no thread hop; a miss reads
    the participant once from the state store.
    """
    presented = request.headers.get(PARTICIPANT_HEADER, "")
    cache: ParticipantCache = request.app.state.participant_cache
    entry = cache.get(participant_id)
    if entry is None:
        store: StateStore = request.app.state.store
        record = await run_in_threadpool(_load_participant, store, session_id, participant_id)
        entry = (record.session_id, record.client_name, record.credential_hash)
        cache.put(participant_id, *entry)
    if entry[0] != session_id:
        raise HTTPException(
            status_code=404,
            detail=f"Participant {participant_id} not found in session {session_id}.",
        )
    if not presented or not hmac.compare_digest(hash_token(presented), entry[2]):
        raise _forbidden(participant_id)
    return ParticipantAuth(session_id, participant_id, entry[1])


ParticipantDep = Annotated[ParticipantAuth, Depends(require_participant)]
