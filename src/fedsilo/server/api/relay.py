"""The fast exchange's routes: a participant relays bytes to a peer, and long-polls its own.

Both calls are async end to end: on the hot path (a running session, a sender and recipient
already seen) they read no table and take no thread hop; the relay itself lives in memory
(:mod:`fedsilo.server.engine.relay`).

A send may also wait for the caller's own next message (``POST .../relay/{to}?wait=W``):
a lock-step protocol (SplitNN: an embedding out, its gradient back) then makes one request
per message instead of a send and a long-poll, which halves the requests and the process
wake-ups of every batch -- what its latency is made of on a busy machine.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from fedsilo.server.api.deps import (
    ACCESS_RESPONSES,
    BODY_RESPONSES,
    ClientToken,
    ParticipantCache,
    ParticipantDep,
    errors,
)
from fedsilo.server.api.direct import DirectRoute
from fedsilo.server.engine import SessionEngine
from fedsilo.server.engine.relay import MessageRelay, RelayMessage
from fedsilo.server.state import StateStore
from fedsilo.wire import OCTET_STREAM, SENDER_HEADER, TAG_HEADER, SessionEnded, SessionStatus

__all__ = ["TAG_PATTERN", "router"]

router = APIRouter(
    prefix="/sessions/{session_id}/participants/{participant_id}/relay",
    tags=["relay"],
    responses=ACCESS_RESPONSES,
    # the hot path: the same dependencies, called without FastAPI's solver (api/direct.py)
    route_class=DirectRoute,
)

#: what a message's tag may be: a protocol's own label (``embedding:3:17``), sent as a header
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@+-]{0,128}$")
#: a long-poll looks at the session's state at least this often, so it answers 410 soon after
#: the session ends even if nothing wakes it (the check is in memory while the session runs)
_END_CHECK_S = 0.5
#: seconds between sweeps that drop the mailboxes of sessions that ended unobserved
_SWEEP_S = 10.0

_FULL_DETAIL = (
    "The recipient's fast-exchange mailbox is full; retry after a short backoff "
    "(the recipient has not taken its earlier messages)."
)


def _relay(request: Request) -> MessageRelay:
    relay: MessageRelay = request.app.state.relay
    return relay


@router.post(
    "/{to}",
    status_code=204,
    response_class=Response,
    responses={
        200: {
            "content": {OCTET_STREAM: {}},
            "description": "with `wait` > 0: queued, and the caller's oldest message",
        },
        204: {"description": "queued (with `wait` > 0: and no message for the caller in time)"},
        **BODY_RESPONSES,
        **errors(
            404,
            413,
            429,
            notes={
                404: "no such session, or the caller or `to` is not a participant of it",
                413: "the message exceeds the relay's size limit",
                429: "the recipient's mailbox stayed full (retry with backoff), or too many "
                "failed authentications from this address (see `Retry-After`)",
            },
        ),
        410: {"model": SessionEnded, "description": "the session is over"},
    },
)
async def relay_message(
    session_id: str,
    to: str,
    request: Request,
    _: ClientToken,
    caller: ParticipantDep,
    wait: float = Query(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds to then wait for the caller's own next message (0: do not)",
    ),
) -> Response:
    """Queue the request body (raw bytes, normally sealed to ``to``) in ``to``'s mailbox;
    with ``wait`` > 0, then answer the caller's oldest message as ``GET .../relay`` does."""
    relay = _relay(request)
    tag = request.headers.get(TAG_HEADER, "")
    if not TAG_PATTERN.match(tag):
        shown = tag if len(tag) <= 40 else tag[:37] + "..."
        raise HTTPException(
            status_code=422,
            detail=f"The {TAG_HEADER} header must match {TAG_PATTERN.pattern}. Got {shown!r}.",
        )
    if await _recipient_session(request, to) != session_id:
        raise HTTPException(
            status_code=404, detail=f"Participant {to} not found in session {session_id}."
        )
    ended = await _ended_response(request, session_id)
    if ended is not None:
        return ended
    payload = await _read_body(request, relay.max_message_bytes)
    message = RelayMessage(sender=caller.participant_id, tag=tag, payload=payload)
    if not await relay.put(session_id, to, message, wait=relay.room_wait):
        ended = await _ended_response(request, session_id)
        if ended is not None:
            return ended
        raise HTTPException(status_code=429, detail=_FULL_DETAIL, headers={"Retry-After": "1"})
    await _sweep(request)
    if wait <= 0:
        return Response(status_code=204)
    return await _next_for(request, session_id, caller.participant_id, wait)


@router.get(
    "",
    response_class=Response,
    responses={
        200: {"content": {OCTET_STREAM: {}}, "description": "the oldest message"},
        204: {"description": "no message within `wait` seconds"},
        410: {"model": SessionEnded, "description": "the session is over"},
        **errors(404, notes={404: "no such session, or the caller is not a participant of it"}),
    },
)
async def next_message(
    session_id: str,
    request: Request,
    _: ClientToken,
    caller: ParticipantDep,
    wait: float = Query(
        default=30.0, ge=0, allow_inf_nan=False, description="seconds to hold the request open"
    ),
) -> Response:
    """The caller's oldest message: body = payload, sender and tag in response headers."""
    return await _next_for(request, session_id, caller.participant_id, wait)


# ------------------------------------------------------------------------ helpers


async def _next_for(
    request: Request, session_id: str, participant_id: str, wait: float
) -> Response:
    """``participant_id``'s oldest message (200), none within ``wait`` seconds (204), or
    410 when the session ends meanwhile."""
    relay = _relay(request)
    engine: SessionEngine = request.app.state.engine
    held = min(wait, engine.settings.max_long_poll)
    deadline = time.monotonic() + held
    # A relay poll is a heartbeat too (a client in a chatty exchange polls here, not tasks).
    engine.liveness.seen(participant_id, session_id, held)
    while True:
        ended = await _ended_response(request, session_id)
        if ended is not None:
            return ended
        remaining = deadline - time.monotonic()
        message = await relay.take(
            session_id, participant_id, wait=max(0.0, min(remaining, _END_CHECK_S))
        )
        if message is not None:
            if await request.is_disconnected():
                # The poller gave up (a client timeout, a restart) while it waited: keep the
                # message for its next poll rather than write it to a closed connection.
                relay.put_back(session_id, participant_id, message)
                return Response(status_code=204)
            return Response(
                content=message.payload,
                media_type=OCTET_STREAM,
                headers={SENDER_HEADER: message.sender, TAG_HEADER: message.tag},
            )
        if deadline - time.monotonic() <= 0 or await request.is_disconnected():
            return Response(status_code=204)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) one over ``limit`` bytes without holding more than that."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> HTTPException:
    return HTTPException(
        status_code=413,
        detail=f"A fast-exchange message is at most {limit} bytes. Got {size} bytes; "
        "split it, or send it as a task.",
    )


async def _recipient_session(request: Request, participant_id: str) -> str | None:
    """The session ``participant_id`` belongs to, from the participant cache when known."""
    cache: ParticipantCache = request.app.state.participant_cache
    entry = cache.get(participant_id)
    if entry is None:
        store: StateStore = request.app.state.store
        record = await run_in_threadpool(store.get_participant, participant_id)
        if record is None:
            return None
        cache.put(record.id, record.session_id, record.client_name, record.credential_hash)
        return record.session_id
    return entry[0]


async def _ended_response(request: Request, session_id: str) -> JSONResponse | None:
    """410 with the session's end when it is over (its messages are dropped), else None.

    While the session's workflow runs this is one in-memory check; otherwise the session's
    status is read once from the database.
    """
    engine: SessionEngine = request.app.state.engine
    if engine.is_running(session_id):
        return None
    store: StateStore = request.app.state.store
    state = await run_in_threadpool(_read_session_state, store, session_id)
    if state is None:
        raise HTTPException(status_code=404, detail=f"Session {session_id} not found.")
    status, reason = state
    if not status.ended:
        return None
    _relay(request).drop_session(session_id)
    body = SessionEnded(detail=f"Session {session_id} is {status}.", status=status, reason=reason)
    return JSONResponse(status_code=410, content=body.model_dump(mode="json"))


async def _sweep(request: Request) -> None:
    """Every ``_SWEEP_S``, drop the mailboxes of sessions that ended while nobody polled."""
    relay = _relay(request)
    now = time.monotonic()
    if now - relay.swept_at < _SWEEP_S:
        return
    relay.swept_at = now
    engine: SessionEngine = request.app.state.engine
    idle = [sid for sid in relay.sessions() if not engine.is_running(sid)]
    if not idle:
        return
    store: StateStore = request.app.state.store
    states = await run_in_threadpool(lambda: {sid: _read_session_state(store, sid) for sid in idle})
    for sid, state in states.items():
        if state is None or state[0].ended:
            relay.drop_session(sid)


# ------------------------------------------------- state reads (off the hot path)


def _read_session_state(
    store: StateStore, session_id: str
) -> tuple[SessionStatus, str | None] | None:
    """The session's status and failure reason, or None when there is no such session."""
    record = store.get_session(session_id)
    return None if record is None else (SessionStatus(record.status), record.failure_reason)
