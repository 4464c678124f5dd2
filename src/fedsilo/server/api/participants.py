"""Participants: join, list; task delivery (long-poll) and replies."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.server.api.deps import DbDep, EngineDep, get_session_row
from fedsilo.server.auth import CurrentToken
from fedsilo.server.db import Database
from fedsilo.server.engine.runner import ReplyRejected, SessionEngine
from fedsilo.server.tables import ParticipantRow, SessionRow, utcnow
from fedsilo.wire import (
    OCTET_STREAM,
    DatasetSummary,
    ParticipantJoin,
    ParticipantPublic,
    ReplyAck,
    SessionEnded,
    SessionStatus,
)

router = APIRouter(prefix="/sessions/{session_id}/participants", tags=["participants"])

# Seen-at bookkeeping is refreshed at most this often, to keep writes off the hot path.
_SEEN_RESOLUTION = timedelta(seconds=10)


def participant_public(row: ParticipantRow, rejoined: bool = False) -> ParticipantPublic:
    return ParticipantPublic(
        id=row.id,
        session_id=row.session_id,
        client_name=row.client_name,
        dataset=DatasetSummary.model_validate(row.dataset),
        joined_at=row.joined_at,
        last_seen_at=row.last_seen_at,
        rejoined=rejoined,
    )


@router.post("", status_code=201)
def join_session(
    session_id: str, body: ParticipantJoin, db: DbDep, engine: EngineDep, _: CurrentToken
) -> ParticipantPublic:
    session = get_session_row(db, session_id)
    if SessionStatus(session.status).ended:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot join session {session_id}: it is {session.status}.",
        )
    _check_columns(session, body.dataset)
    now = utcnow()
    with db.session() as s:
        existing = s.scalar(
            select(ParticipantRow).where(
                ParticipantRow.session_id == session_id,
                ParticipantRow.client_name == body.client_name,
            )
        )
        if existing is not None:
            # The same silo coming back (a restarted client process) keeps its identity.
            existing.dataset = body.dataset.model_dump()
            existing.last_seen_at = now
            return participant_public(existing, rejoined=True)
        if session.status == SessionStatus.running:
            raise HTTPException(
                status_code=409,
                detail=f"Cannot join session {session_id}: it is already running with its "
                f"clients; new clients can join while it is created or pending.",
            )
        seq = (
            s.scalar(
                select(func.count())
                .select_from(ParticipantRow)
                .where(ParticipantRow.session_id == session_id)
            )
            or 0
        )
        row = ParticipantRow(
            id=secrets.token_hex(8),
            session_id=session_id,
            client_name=body.client_name,
            dataset=body.dataset.model_dump(),
            seq=seq,
            joined_at=now,
            last_seen_at=now,
        )
        s.add(row)
    engine.log(session_id, f"client {body.client_name!r} joined ({body.dataset.train_rows} rows)")
    engine.notify_join()
    return participant_public(row)


def _check_columns(session: SessionRow, dataset: DatasetSummary) -> None:
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


@router.get("")
def list_participants(session_id: str, db: DbDep, _: CurrentToken) -> list[ParticipantPublic]:
    get_session_row(db, session_id)
    with db.session() as s:
        rows = s.scalars(
            select(ParticipantRow)
            .where(ParticipantRow.session_id == session_id)
            .order_by(ParticipantRow.seq)
        ).all()
        return [participant_public(r) for r in rows]


def _known_active(engine: SessionEngine, session_id: str, participant_id: str) -> bool:
    """Memory alone shows the participant is in an active session: it was confirmed within
    ``_SEEN_RESOLUTION`` and its session has a live workflow. The round's hot path then reads
    no table and takes no thread hop."""
    confirmed = engine.participant_seen.get(participant_id)
    return (
        confirmed is not None
        and confirmed[0] == session_id
        and time.monotonic() - confirmed[1] < _SEEN_RESOLUTION.total_seconds()
        and engine.is_running(session_id)
    )


def _poll_state(engine: SessionEngine, session_id: str, participant_id: str) -> SessionStatus:
    """The session's status from the database, after checking the participant belongs to it;
    refreshes ``last_seen_at`` and the in-memory confirmation."""
    row = _read_poll_state(engine.db, session_id, participant_id)
    engine.participant_seen[participant_id] = (session_id, time.monotonic())
    return SessionStatus(row.status)


def _read_poll_state(db: Database, session_id: str, participant_id: str) -> SessionRow:
    now = utcnow()
    with db.session() as s:
        participant = s.get(ParticipantRow, participant_id)
        if participant is None or participant.session_id != session_id:
            raise HTTPException(
                status_code=404,
                detail=f"Participant {participant_id} not found in session {session_id}.",
            )
        if participant.last_seen_at is None or now - participant.last_seen_at > _SEEN_RESOLUTION:
            participant.last_seen_at = now
        session = s.get(SessionRow, session_id)
        if session is None:
            raise HTTPException(status_code=404, detail=f"Session {session_id} not found.")
        return session


def _ended(db: Database, session_id: str) -> JSONResponse:
    session = get_session_row(db, session_id)
    body = SessionEnded(
        detail=f"Session {session.id} is {session.status}.",
        status=SessionStatus(session.status),
        reason=session.failure_reason,
    )
    return JSONResponse(status_code=410, content=body.model_dump(mode="json"))


@router.get(
    "/{participant_id}/tasks/next",
    response_class=Response,
    responses={
        200: {"content": {OCTET_STREAM: {}}, "description": "task frame"},
        204: {"description": "no task within `wait` seconds"},
        410: {"model": SessionEnded, "description": "the session is over"},
    },
)
async def next_task(
    session_id: str,
    participant_id: str,
    request: Request,
    _: CurrentToken,
    wait: float = Query(default=30.0, ge=0, description="seconds to hold the request open"),
) -> Response:
    engine: SessionEngine = request.app.state.engine
    wait = min(wait, engine.settings.max_long_poll)
    deadline = time.monotonic() + wait
    hub = engine.hub
    event = hub.subscribe(participant_id)
    try:
        while True:
            event.clear()
            task = hub.peek(participant_id)
            # A queued task proves the participant belongs to its session: no table read.
            if task is not None and task.session_id == session_id:
                task.delivered_at = task.delivered_at or utcnow()
                return Response(content=task.frame, media_type=OCTET_STREAM)
            if _known_active(engine, session_id, participant_id):
                status = SessionStatus.running
            else:
                status = await run_in_threadpool(_poll_state, engine, session_id, participant_id)
            if status.ended:
                return await run_in_threadpool(_ended, engine.db, session_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Response(status_code=204)
            # Woken by a queued task or by the session ending; either way, look again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=remaining)
    finally:
        hub.unsubscribe(participant_id, event)


@router.post("/{participant_id}/tasks/{task_id}/reply")
async def reply_task(
    session_id: str,
    participant_id: str,
    task_id: str,
    request: Request,
    _: CurrentToken,
) -> ReplyAck:
    body = await request.body()
    try:
        await run_in_threadpool(
            request.app.state.engine.accept_reply, session_id, participant_id, task_id, body
        )
    except ReplyRejected as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc
    return ReplyAck(task_id=task_id, accepted=True)


__all__ = ["participant_public", "router"]
