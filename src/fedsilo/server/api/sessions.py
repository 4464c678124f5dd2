"""Sessions: create, list, get, start, cancel, delete; metrics, model, logs."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy import delete, select, update

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.server.api.deps import DbDep, EngineDep, get_session_row
from fedsilo.server.auth import CurrentToken
from fedsilo.server.tables import ModelRow, RoundRow, SessionLogRow, SessionRow, utcnow
from fedsilo.wire import (
    OCTET_STREAM,
    SessionCreate,
    SessionLogLine,
    SessionMetricsPublic,
    SessionPublic,
    SessionStatus,
)

router = APIRouter(prefix="/sessions", tags=["sessions"])


def session_public(row: SessionRow) -> SessionPublic:
    return SessionPublic(
        id=row.id,
        name=row.name,
        description=row.description,
        kind=row.kind,
        package_name=row.package_name,
        min_num_clients=row.min_num_clients,
        num_rounds=row.num_rounds,
        model_config_=row.model_config_,
        data_config=row.data_config,
        status=row.status,
        round=row.round,
        failure_reason=row.failure_reason,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


@router.post("", status_code=201)
def create_session(body: SessionCreate, db: DbDep, token: CurrentToken) -> SessionPublic:
    try:
        package = get_package(body.package_name)
        package.parse_configs(body.model_config_, body.data_config)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    if package.kind != body.kind:
        raise HTTPException(
            status_code=422,
            detail=f"Package {package.name!r} runs {package.kind} sessions; "
            f"got kind {body.kind!r}.",
        )
    now = utcnow()
    row = SessionRow(
        id=secrets.token_hex(5),
        name=body.name,
        description=body.description,
        kind=body.kind,
        package_name=body.package_name,
        min_num_clients=body.min_num_clients,
        num_rounds=body.num_rounds,
        model_config_=body.model_config_,
        data_config=body.data_config,
        status=SessionStatus.created,
        round=0,
        created_by=token.name,
        created_at=now,
        updated_at=now,
    )
    with db.session() as s:
        s.add(row)
    return session_public(row)


@router.get("")
def list_sessions(db: DbDep, _: CurrentToken) -> list[SessionPublic]:
    with db.session() as s:
        rows = s.scalars(select(SessionRow).order_by(SessionRow.created_at.desc())).all()
        return [session_public(r) for r in rows]


@router.get("/{session_id}")
def get_session(session_id: str, db: DbDep, _: CurrentToken) -> SessionPublic:
    return session_public(get_session_row(db, session_id))


@router.post("/{session_id}/start")
def start_session(session_id: str, db: DbDep, engine: EngineDep, _: CurrentToken) -> SessionPublic:
    row = get_session_row(db, session_id)
    with db.session() as s:
        changed = s.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.status == SessionStatus.created)
            .values(status=SessionStatus.pending, updated_at=utcnow())
        ).rowcount  # type: ignore[attr-defined]
    if not changed:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot start session {session_id}: it is {row.status}, not created.",
        )
    engine.start_session(session_id)
    return session_public(get_session_row(db, session_id))


@router.post("/{session_id}/cancel")
def cancel_session(session_id: str, db: DbDep, engine: EngineDep, _: CurrentToken) -> SessionPublic:
    row = get_session_row(db, session_id)
    now = utcnow()
    active = (SessionStatus.created, SessionStatus.pending, SessionStatus.running)
    with db.session() as s:
        changed = s.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.status.in_(active))
            .values(
                status=SessionStatus.canceled,
                failure_reason="canceled by a user",
                ended_at=now,
                updated_at=now,
            )
        ).rowcount  # type: ignore[attr-defined]
    if not changed:
        raise HTTPException(
            status_code=409, detail=f"Cannot cancel session {session_id}: it is {row.status}."
        )
    engine.cancel(session_id)
    engine.log(session_id, "session canceled by a user")
    return session_public(get_session_row(db, session_id))


@router.delete("/{session_id}", status_code=204)
def delete_session(session_id: str, db: DbDep, engine: EngineDep, _: CurrentToken) -> Response:
    row = get_session_row(db, session_id)
    if row.status in (SessionStatus.pending, SessionStatus.running):
        raise HTTPException(
            status_code=409,
            detail=f"Cannot delete session {session_id}: it is {row.status}; cancel it first.",
        )
    with db.session() as s:
        s.execute(delete(SessionRow).where(SessionRow.id == session_id))
    engine.store.delete_prefix(f"sessions/{session_id}")
    return Response(status_code=204)


@router.get("/{session_id}/metrics")
def session_metrics(session_id: str, db: DbDep, _: CurrentToken) -> SessionMetricsPublic:
    get_session_row(db, session_id)
    with db.session() as s:
        rounds = s.scalars(
            select(RoundRow).where(RoundRow.session_id == session_id).order_by(RoundRow.round)
        ).all()
        federated: list[dict[str, Any]] = [dict(r.federated) for r in rounds]
        clients: list[dict[str, Any]] = [dict(r.per_client) for r in rounds]
    latest = federated[-1].get("loss") if federated else None
    return SessionMetricsPublic(
        session_id=session_id,
        federated_metrics=federated,
        client_metrics=clients,
        latest_global_model_federated_loss=latest,
    )


@router.get(
    "/{session_id}/model",
    response_class=Response,
    responses={200: {"content": {OCTET_STREAM: {}}, "description": "model frame"}},
)
def session_model(session_id: str, db: DbDep, engine: EngineDep, _: CurrentToken) -> Response:
    row = get_session_row(db, session_id)
    with db.session() as s:
        model = s.get(ModelRow, session_id)
    data = engine.store.read_bytes(model.key) if model is not None else None
    if data is None:
        raise HTTPException(
            status_code=404,
            detail=f"Session {session_id} has no model yet (it is {row.status}).",
        )
    return Response(content=data, media_type=OCTET_STREAM)


@router.get("/{session_id}/logs")
def session_logs(session_id: str, db: DbDep, _: CurrentToken) -> list[SessionLogLine]:
    get_session_row(db, session_id)
    with db.session() as s:
        rows = s.scalars(
            select(SessionLogRow)
            .where(SessionLogRow.session_id == session_id)
            .order_by(SessionLogRow.id)
        ).all()
        return [SessionLogLine(time=r.created_at, message=r.message) for r in rows]
