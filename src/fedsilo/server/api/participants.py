"""Participants: join (with a credential), list; task delivery (long-poll) and replies.

A reply may carry ``?wait=S``: the server accepts it and answers like ``tasks/next`` with
that wait, so a client spends one HTTP exchange per task instead of two.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from fedsilo.errors import ConfigError
from fedsilo.federation import Failure, get_package
from fedsilo.server import audit
from fedsilo.server.api.deps import (
    ACCESS_RESPONSES,
    BODY_RESPONSES,
    ClientToken,
    EngineDep,
    ParticipantDep,
    SessionView,
    StoreDep,
    errors,
    get_session_record,
)
from fedsilo.server.api.direct import DirectRoute
from fedsilo.server.auth import hash_token
from fedsilo.server.engine.frames import receive_buffer
from fedsilo.server.engine.gate import Slot
from fedsilo.server.engine.hub import PendingTask
from fedsilo.server.engine.runner import ReplyRejected, SessionEngine
from fedsilo.server.state import ParticipantRecord, SessionRecord, StateStore, utcnow
from fedsilo.wire import (
    HEARTBEAT_HEADER,
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    TASK_ID_HEADER,
    DatasetSummary,
    ParticipantJoin,
    ParticipantJoined,
    ParticipantPublic,
    ReplyAck,
    SessionEnded,
    SessionStatus,
)

router = APIRouter(
    prefix="/sessions/{session_id}/participants",
    tags=["participants"],
    responses=ACCESS_RESPONSES,
    # the round's hot path: the same dependencies, called without FastAPI's solver
    # (api/direct.py); the join (a body) and the list (sync) go through FastAPI's handler
    route_class=DirectRoute,
)

# A frame larger than this is streamed in pieces of this size: written whole, Python 3.11's
# asyncio transport copies whatever the socket does not take at once into its own buffer,
# i.e. one copy of the model per recipient; in pieces, uvicorn's flow control keeps about two
# pieces per connection in memory (50 clients fetching a 100 MB model: 1 MiB pieces measured
# +100 MB of server peak, 256 KiB +25 MB; bench/streaming_memory.py).
_FRAME_PIECE = 1 << 18
#: pieces of a streamed frame between two liveness marks (16 MiB)
_KEEPALIVE_PIECES = 64
_DRAINING = "The server is stopping; retry (a restarted server resumes the session)."

_TASK_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {OCTET_STREAM: {}}, "description": "task frame; its id in X-Fedsilo-Task-Id"},
    204: {"description": "no task within `wait` seconds"},
    410: {"model": SessionEnded, "description": "the session is over"},
    **errors(
        404,
        503,
        notes={
            404: "no such session, or the participant is not in it",
            503: "the server is stopping (or its state store failed); retry",
        },
    ),
}


def participant_public(record: ParticipantRecord, rejoined: bool = False) -> ParticipantPublic:
    return ParticipantPublic(
        id=record.id,
        session_id=record.session_id,
        client_name=record.client_name,
        dataset=DatasetSummary.model_validate(record.dataset),
        public_key=record.public_key,
        joined_at=record.joined_at,
        last_seen_at=record.last_seen_at,
        offline_at=record.offline_at,
        rejoined=rejoined,
    )


# -------------------------------------------------------------------------- join


@router.post(
    "",
    status_code=201,
    responses={
        **BODY_RESPONSES,
        **errors(
            403,
            404,
            409,
            notes={403: "a rejoin without (or with another) participant credential"},
        ),
    },
)
def join_session(
    session_id: str,
    body: ParticipantJoin,
    request: Request,
    store: StoreDep,
    engine: EngineDep,
    principal: ClientToken,
) -> ParticipantJoined:
    """Join a session; the first join under a ``client_name`` returns its credential.

    A rejoin under a name that already joined must present that participant's credential
    (:data:`~fedsilo.wire.PARTICIPANT_HEADER`) and keeps the participant's id. While the
    session runs, a rejoin may change neither the declared dataset nor the public key.
    """
    session = get_session_record(store, session_id)
    if session.status.ended:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot join session {session_id}: it is {session.status}.",
        )
    _check_columns(session, body.dataset)
    presented = request.headers.get(PARTICIPANT_HEADER, "")
    existing = store.find_participant(session_id, body.client_name)
    if existing is not None:
        _check_rejoin(existing, session, body, presented)
        rejoined = store.rejoin_participant(
            existing.id, dataset=body.dataset.model_dump(), public_key=body.public_key
        )
        if rejoined is None:
            raise HTTPException(status_code=404, detail=f"Session {session_id} not found.")
        audit.record(request, principal, "participant.join", session_id, detail=_rejoin(body))
        engine.liveness.seen(rejoined.id, session_id)  # an offline participant is live again
        return ParticipantJoined(**participant_public(rejoined, rejoined=True).model_dump())
    if session.status == SessionStatus.running:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot join session {session_id}: it is already running with its "
            f"clients; new clients can join while it is created or pending.",
        )
    try:
        joined = engine.first_join(session_id, body.client_name, body.dataset, body.public_key)
    except ValueError as exc:  # the session was deleted since it was read above
        raise HTTPException(status_code=404, detail=f"Session {session_id} not found.") from exc
    if joined is None:  # two first joins under one name raced; the other one won
        raise HTTPException(
            status_code=409,
            detail=f"Client name {body.client_name!r} joined session {session_id} at the same "
            "time from elsewhere; rejoin with that participant's credential.",
        )
    record, credential = joined
    audit.record(request, principal, "participant.join", session_id, detail=_joined(record))
    return ParticipantJoined(**participant_public(record).model_dump(), credential=credential)


def _joined(record: ParticipantRecord) -> str:
    return f"client {record.client_name!r} joined as participant {record.id}"


def _rejoin(body: ParticipantJoin) -> str:
    return f"client {body.client_name!r} rejoined"


def _check_rejoin(
    existing: ParticipantRecord, session: SessionRecord, body: ParticipantJoin, presented: str
) -> None:
    """403 without the participant's own credential; 409 for a change a running session
    cannot take."""
    if not presented:
        raise HTTPException(
            status_code=403,
            detail=f"Client name {body.client_name!r} already joined session {session.id}; "
            f"a rejoin must present that participant's credential in the "
            f"{PARTICIPANT_HEADER} header.",
        )
    if not hmac.compare_digest(hash_token(presented), existing.credential_hash):
        raise HTTPException(
            status_code=403,
            detail=f"The credential presented does not belong to client {body.client_name!r} "
            f"of session {session.id}.",
        )
    if session.status != SessionStatus.running:
        return
    changed = []
    declared = DatasetSummary.model_validate(existing.dataset)
    if declared.train_rows != body.dataset.train_rows:
        changed.append(f"dataset.train_rows ({declared.train_rows} -> {body.dataset.train_rows})")
    if declared.test_rows != body.dataset.test_rows:
        changed.append(f"dataset.test_rows ({declared.test_rows} -> {body.dataset.test_rows})")
    if declared.columns != body.dataset.columns:
        changed.append("dataset.columns")
    if existing.public_key != body.public_key:
        changed.append("public_key")
    if changed:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot rejoin session {session.id} as {body.client_name!r} with changes "
            f"while it is running: {', '.join(changed)} changed.",
        )


def _check_columns(session: SessionRecord, dataset: DatasetSummary) -> None:
    """The server double-checks the summary: a client must never join without the columns."""
    try:
        package = get_package(session.package_name)
        data_config = package.parse_data_config(session.data_config)
    except ConfigError as exc:  # the session was validated at creation; this is defensive
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    have = {c.name for c in dataset.columns}
    missing = [c for c in data_config.required_columns() if c not in have]
    if missing:
        raise HTTPException(
            status_code=422,
            detail=f"dataset.columns: missing required column(s) {missing} for session "
            f"{session.id}.",
        )


@router.get("", responses=errors(404))
def list_participants(session_id: str, store: StoreDep, _: SessionView) -> list[ParticipantPublic]:
    return [participant_public(record) for record in store.list_participants(session_id)]


# ------------------------------------------------------------------ task delivery


def _known_active(engine: SessionEngine, session_id: str) -> bool:
    """Memory alone shows the session is active: it has a live workflow (the credential
    dependency already proved the participant is in it). The round's hot path then reads no
    table and takes no thread hop; ``last_seen_at`` is the liveness sweep's to write."""
    return engine.is_running(session_id)


def _poll_state(engine: SessionEngine, session_id: str) -> SessionStatus:
    """The session's status from the state store."""
    return get_session_record(engine.state, session_id).status


def _ended(store: StateStore, session_id: str) -> JSONResponse:
    session = get_session_record(store, session_id)
    body = SessionEnded(
        detail=f"Session {session.id} is {session.status}.",
        status=session.status,
        reason=session.failure_reason,
    )
    return JSONResponse(status_code=410, content=body.model_dump(mode="json"))


def _frame_response(
    task: PendingTask, heartbeat: float, keepalive: Callable[[], None] | None = None
) -> Response:
    headers = {TASK_ID_HEADER: task.id, HEARTBEAT_HEADER: f"{heartbeat:g}"}
    frame = task.frame
    if len(frame) <= _FRAME_PIECE:
        return Response(content=frame, media_type=OCTET_STREAM, headers=headers)

    async def pieces() -> AsyncIterator[memoryview]:
        for number, start in enumerate(range(0, len(frame), _FRAME_PIECE)):
            # a client downloading a large frame is live (50 clients sharing a loaded
            # loopback took longer than the liveness grace to fetch 95 MB each)
            if keepalive is not None and number % _KEEPALIVE_PIECES == 0:
                keepalive()
            yield frame[start : start + _FRAME_PIECE]

    headers["Content-Length"] = str(len(frame))
    return StreamingResponse(pieces(), media_type=OCTET_STREAM, headers=headers)


async def _hang_up(request: Request, event: asyncio.Event, gone: list[bool]) -> None:
    """Wake the long-poll when its client disconnects (a killed client's kernel closes the
    socket): its silence then counts from now, not from the end of the wait it asked for."""
    while (await request.receive())["type"] != "http.disconnect":
        continue  # the (empty or already read) body's last message
    gone.append(True)
    event.set()


async def deliver_next(
    engine: SessionEngine, session_id: str, participant_id: str, wait: float, request: Request
) -> Response:
    """The long-poll both routes answer with: the participant's next task frame (200, its
    id in :data:`~fedsilo.wire.TASK_ID_HEADER`), 204 after ``wait`` seconds without one, or
    410 once the session is over."""
    wait = min(wait, engine.settings.max_long_poll)
    deadline = time.monotonic() + wait
    hub, liveness = engine.hub, engine.liveness
    # The poll is the heartbeat: the participant is live while it waits, and for the grace
    # period after (it then polls again, or heartbeats while it works on a task).
    liveness.seen(participant_id, session_id, wait)
    event = hub.subscribe(participant_id)
    gone: list[bool] = []
    watcher = asyncio.create_task(_hang_up(request, event, gone))
    try:
        while True:
            event.clear()
            task = hub.peek(participant_id)
            if task is not None and task.session_id == session_id:
                task.delivered_at = task.delivered_at or utcnow()
                return _frame_response(
                    task,
                    liveness.heartbeat_interval,
                    lambda: liveness.seen(participant_id, session_id),
                )
            if engine.draining.is_set():
                # Answered before the shutdown cuts the poll off (uvicorn would answer 500):
                # a 503 is retried by the client until the restarted server answers.
                return JSONResponse(
                    status_code=503, content={"detail": _DRAINING}, headers={"Retry-After": "1"}
                )
            if _known_active(engine, session_id):
                status = SessionStatus.running
            else:
                status = await run_in_threadpool(_poll_state, engine, session_id)
            if status.ended:
                return await run_in_threadpool(_ended, engine.state, session_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or gone:
                return Response(status_code=204)
            # Woken by a queued task, the session ending or the client hanging up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=remaining)
    finally:
        watcher.cancel()
        hub.unsubscribe(participant_id, event)
        liveness.seen(participant_id, session_id)


@router.get("/{participant_id}/tasks/next", response_class=Response, responses=_TASK_RESPONSES)
async def next_task(
    session_id: str,
    participant_id: str,
    request: Request,
    _: ClientToken,
    participant: ParticipantDep,
    wait: float = Query(
        default=30.0, ge=0, allow_inf_nan=False, description="seconds to hold the request open"
    ),
) -> Response:
    engine: SessionEngine = request.app.state.engine
    return await deliver_next(engine, session_id, participant.participant_id, wait, request)


@router.post(
    "/{participant_id}/heartbeat",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "heard; keep working on the task"},
        410: {"model": SessionEnded, "description": "the session is over"},
        **errors(404, notes={404: "no such session, or the participant is not in it"}),
    },
)
async def heartbeat(
    session_id: str,
    participant_id: str,
    request: Request,
    _: ClientToken,
    participant: ParticipantDep,
) -> Response:
    """A sign of life from a client working on a long task: without one every
    :data:`~fedsilo.wire.HEARTBEAT_HEADER` seconds (the task frame's header), a participant
    with no poll open is marked offline after the server's grace period."""
    engine: SessionEngine = request.app.state.engine
    pid = participant.participant_id
    engine.liveness.seen(pid, session_id)
    if not _known_active(engine, session_id):
        status = await run_in_threadpool(_poll_state, engine, session_id)
        if status.ended:
            return await run_in_threadpool(_ended, engine.state, session_id)
    return Response(status_code=204)


# ------------------------------------------------------------------------ replies


async def _read_body(request: Request, size: int | None, spill: Path | None) -> bytes | memoryview:
    """The request body in one buffer: preallocated when its size is declared, so a large
    update is copied once from the socket and never joined from pieces; a large one spilled
    out of the resident set (:func:`~fedsilo.server.engine.frames.receive_buffer`)."""
    if size is None:
        return await request.body()
    view = memoryview(receive_buffer(size, spill))
    filled = 0
    async for piece in request.stream():
        end = filled + len(piece)
        if end > size:
            raise HTTPException(
                status_code=400, detail=f"The body is longer than its Content-Length ({size})."
            )
        view[filled:end] = piece
        filled = end
    if filled != size:
        raise HTTPException(
            status_code=400,
            detail=f"The body ended after {filled} of its Content-Length {size} bytes.",
        )
    return view


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)


async def _accept(
    engine: SessionEngine, session_id: str, participant_id: str, task_id: str, request: Request
) -> None:
    if engine.hub.find(task_id, session_id, participant_id) is None:
        await run_in_threadpool(engine.reply_not_awaited, session_id, participant_id, task_id)
    size = _content_length(request)
    # The slot comes before the body: while the workflow has not consumed earlier large
    # replies, this one stays unread in the client's socket buffers; its client is live.
    slot: Slot = await engine.gate(session_id).acquire(
        size, keepalive=lambda: engine.liveness.seen(participant_id, session_id)
    )
    if engine.hub.find(task_id, session_id, participant_id) is None:
        slot.release()  # gone while it waited: refused before its body is read
        await run_in_threadpool(engine.reply_not_awaited, session_id, participant_id, task_id)
    context = engine.context_of(session_id)
    try:
        body = await _read_body(request, size, context.spill if context is not None else None)
    except BaseException:
        slot.release()
        raise
    try:
        accepted = engine.accept_reply(session_id, participant_id, task_id, body, slot)
    except ReplyRejected as exc:
        # The traceback keeps accept_reply's frame, and the frames keep the update: in a
        # reference cycle only the cyclic collector frees, 95 MB per refused reply.
        del body
        traceback.clear_frames(exc.__traceback__)
        if exc.failure is not None:
            await run_in_threadpool(
                engine.record_task_failure, session_id, task_id, exc.failure.reason
            )
        elif exc.status_code == 409:  # expired while the body was read: say what it became
            await run_in_threadpool(engine.reply_not_awaited, session_id, participant_id, task_id)
        raise
    del body  # the workflow's now: this handler must not keep it alive while it long-polls
    if isinstance(accepted.outcome, Failure):
        await run_in_threadpool(
            engine.record_task_failure,
            session_id,
            task_id,
            accepted.outcome.reason,
            accepted.reply_meta,
        )


@router.post(
    "/{participant_id}/tasks/{task_id}/reply",
    responses={**_TASK_RESPONSES, **BODY_RESPONSES,
               **errors(409, notes={409: "the task is no longer awaited"}),
               200: {"model": ReplyAck, "content": {OCTET_STREAM: {}},
                     "description": "ReplyAck, or with "
               "`wait` the next task frame as from tasks/next"}},
)  # fmt: skip
async def reply_task(
    session_id: str,
    participant_id: str,
    task_id: str,
    request: Request,
    _: ClientToken,
    participant: ParticipantDep,
    wait: float | None = Query(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="answer with the next task, waiting up to S seconds",
    ),
) -> Response:
    engine: SessionEngine = request.app.state.engine
    engine.liveness.seen(participant.participant_id, session_id)
    try:
        await _accept(engine, session_id, participant.participant_id, task_id, request)
    except ReplyRejected as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc
    if wait is None:
        ack = ReplyAck(task_id=task_id, accepted=True)
        return JSONResponse(content=ack.model_dump(mode="json"))
    return await deliver_next(engine, session_id, participant.participant_id, wait, request)


__all__ = ["deliver_next", "participant_public", "router"]
