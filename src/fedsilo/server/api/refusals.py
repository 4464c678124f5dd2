"""Refusals: a client that declines a session before joining says so, in one line.

A client checks its data and the session's configuration before it joins (principle 1 of the
design: the client is the data owner's agent and can refuse). Without a word to the server,
a session missing that client would sit pending and its owner would never learn why. So the
refusing client posts ``{client_name, reason}`` here; the server writes the session's log
line ``client 'X' refused to join: <reason>``, shows it as the status reason
(``failure_reason``) while the session is created or pending (running clears it), and
audits it as ``participant.refuse``.

The reason is one printable line of at most :data:`~fedsilo.wire.REFUSAL_REASON_MAX`
characters (:class:`~fedsilo.wire.ParticipantRefusal`); the client builds it from its error
without local paths or file contents (:mod:`fedsilo.client.refusal`).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request

from fedsilo.server import audit
from fedsilo.server.api.deps import (
    ACCESS_RESPONSES,
    BODY_RESPONSES,
    ClientToken,
    EngineDep,
    StoreDep,
    errors,
    get_session_record,
)
from fedsilo.server.state import utcnow
from fedsilo.wire import ParticipantRefusal, RefusalRecorded, SessionStatus

__all__ = ["router"]

logger = logging.getLogger("fedsilo.server")

router = APIRouter(
    prefix="/sessions/{session_id}/refusals", tags=["participants"], responses=ACCESS_RESPONSES
)

#: statuses in which a refusal becomes the session's status reason (it is waiting for clients)
WAITING = frozenset({SessionStatus.created, SessionStatus.pending})


@router.post("", status_code=201, responses={**BODY_RESPONSES, **errors(404, 409)})
def refuse_session(
    session_id: str,
    body: ParticipantRefusal,
    request: Request,
    store: StoreDep,
    engine: EngineDep,
    principal: ClientToken,
) -> RefusalRecorded:
    """Record that a client refused the session before joining, and why.

    The session's log gets the line; a created or pending session also shows it as its
    status reason, the latest refusal replacing an earlier one. 409 once the session ended
    (nobody waits for that client any more).
    """
    session = get_session_record(store, session_id)
    if session.status.ended:
        raise HTTPException(
            status_code=409,
            detail=f"Session {session_id} is {session.status}; a refusal is recorded only "
            "while the session is created, pending or running.",
        )
    message = f"client {body.client_name!r} refused to join: {body.reason}"
    engine.log(session_id, message)
    # Compare-and-set on the status: a session that started meanwhile keeps no stale note.
    store.set_status_reason(session_id, message, expected=WAITING)
    logger.warning("session %s: %s", session_id, message)
    audit.record(request, principal, "participant.refuse", session_id, detail=message)
    return RefusalRecorded(
        session_id=session_id, client_name=body.client_name, message=message, time=utcnow()
    )
