"""Sessions: create, list, get, start, cancel, delete; initial model, metrics, model, logs.

A session is owned by the user whose token created it (``owner_id``, the user's id); the
``*_user_*`` scopes act only on the owner's sessions (the requirements in
:mod:`fedsilo.server.api.deps`). Every change, and a model download, is audited.

A session that names another one in its model config (a VFL session's ``prl_session_id``,
a prediction's ``training_session_id``) may do so only when its creator may read that
session: its owner, or a token with ``read_all_session`` (``admin``). Otherwise the answer
is 404 with the same detail as for a session that does not exist, so a creator learns
nothing about other users' session ids.
"""

from __future__ import annotations

import secrets
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fedsilo.config.secure import check_threshold
from fedsilo.errors import ConfigError
from fedsilo.federation import ModelPackage, get_package
from fedsilo.scopes import Scope
from fedsilo.server import audit, initial_model
from fedsilo.server.access import Principal, SessionGrant
from fedsilo.server.api.deps import (
    ACCESS_RESPONSES,
    BODY_RESPONSES,
    ArtifactsDep,
    EngineDep,
    InitialModelUpload,
    ModelDownload,
    SessionCancel,
    SessionCreator,
    SessionDelete,
    SessionLister,
    SessionRead,
    SessionStart,
    SessionView,
    StoreDep,
    errors,
    get_session_record,
)
from fedsilo.server.settings import Settings
from fedsilo.server.state import ACTIVE_STATUSES, ArtifactStore, SessionRecord, StateStore, utcnow
from fedsilo.wire import (
    OCTET_STREAM,
    InitialModelPublic,
    SessionCreate,
    SessionLogLine,
    SessionMetricsPublic,
    SessionPublic,
    SessionStatus,
    decode_frame,
)

router = APIRouter(prefix="/sessions", tags=["sessions"], responses=ACCESS_RESPONSES)

#: held while a session leaves ``created`` and while an initial model is stored, so an upload
#: lands either before the start (the workflow uses it) or not at all (409)
_STARTING = threading.Lock()
#: model_config fields that name another session the creator must be allowed to read
REFERENCED_SESSIONS = ("prl_session_id", "training_session_id")


def session_public(record: SessionRecord) -> SessionPublic:
    return SessionPublic(
        id=record.id,
        name=record.name,
        description=record.description,
        kind=record.kind,
        package_name=record.package_name,
        min_num_clients=record.min_num_clients,
        num_rounds=record.num_rounds,
        model_config_=record.model_config,
        data_config=record.data_config,
        status=record.status,
        round=record.round,
        failure_reason=record.failure_reason,
        task_timeout=record.task_timeout,
        created_by=record.created_by,
        owner_id=record.owner_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=record.started_at,
        ended_at=record.ended_at,
    )


@router.post("", status_code=201, responses=BODY_RESPONSES)
def create_session(
    body: SessionCreate, request: Request, store: StoreDep, principal: SessionCreator
) -> SessionPublic:
    try:
        package = get_package(body.package_name)
        model_config, _ = package.parse_configs(body.model_config_, body.data_config)
        # secure_aggregation.threshold against min_num_clients (fedsilo.config.secure)
        check_threshold(body.model_config_, body.min_num_clients)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    _check_model_size(package, model_config, request.app.state.settings)
    _check_references(store, principal, model_config)
    if package.kind != body.kind:
        raise HTTPException(
            status_code=422,
            detail=f"Package {package.name!r} runs {package.kind} sessions; "
            f"got kind {body.kind!r}.",
        )
    now = utcnow()
    record = SessionRecord(
        id=secrets.token_hex(5),
        name=body.name,
        description=body.description,
        kind=str(body.kind),
        package_name=body.package_name,
        min_num_clients=body.min_num_clients,
        num_rounds=body.num_rounds,
        model_config=body.model_config_,
        data_config=body.data_config,
        task_timeout=body.task_timeout,
        status=SessionStatus.created,
        created_by=principal.user_name,
        owner_id=principal.user_id,
        created_at=now,
        updated_at=now,
    )
    store.create_session(record)
    audit.record(request, principal, "session.create", record.id)
    return session_public(record)


def _check_model_size(
    package: ModelPackage[Any, Any], model_config: Any, settings: Settings
) -> None:
    """422 when the model the config describes has more parameters than the server takes:
    refused here, from the config alone, rather than allocated when the session starts."""
    if package.parameter_count is None:
        return
    count = package.parameter_count(model_config)
    limit = settings.max_model_parameters
    if count > limit:
        raise HTTPException(
            status_code=422,
            detail=f"model_config: the {package.name} model has {count:,} parameters; this "
            f"server takes at most {limit:,} (max_model_parameters, "
            "FEDSILO_MAX_MODEL_PARAMETERS).",
        )


def _check_references(store: StateStore, principal: Principal, model_config: Any) -> None:
    """404 when the config names a session the creator may not read (or that does not
    exist: the same answer, so it reveals no other user's session ids)."""
    for field in REFERENCED_SESSIONS:
        ref = getattr(model_config, field, None)
        if not isinstance(ref, str):
            continue
        record = store.get_session(ref)
        readable = record is not None and (
            principal.has(Scope.read_all_session)
            or (record.owner_id is not None and record.owner_id == principal.user_id)
        )
        if not readable:
            raise HTTPException(
                status_code=404,
                detail=f"model_config.{field}: session {ref} not found among the sessions "
                "this token may read (its user's own; any user's needs 'read_all_session').",
            )


@router.get("")
def list_sessions(store: StoreDep, principal: SessionLister) -> list[SessionPublic]:
    """Every session for a ``read_all_session`` token; a ``read_user_session`` one sees only
    the sessions its user owns."""
    records = store.list_sessions()
    if not principal.has(Scope.read_all_session):
        records = [r for r in records if r.owner_id == principal.user_id]
    return [session_public(record) for record in records]


@router.get("/{session_id}", responses=errors(404))
def get_session(grant: SessionView) -> SessionPublic:
    return session_public(grant.session)


@router.post("/{session_id}/start", responses=errors(404, 409))
def start_session(
    session_id: str, request: Request, store: StoreDep, engine: EngineDep, grant: SessionStart
) -> SessionPublic:
    record = grant.session
    with _STARTING:
        started = store.set_session_status(
            session_id, SessionStatus.pending, expected={SessionStatus.created}
        )
    if not started:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot start session {session_id}: it is {record.status}, not created.",
        )
    engine.start_session(session_id)
    audit.record(request, grant.principal, "session.start", session_id)
    return session_public(get_session_record(store, session_id))


@router.post("/{session_id}/cancel", responses=errors(404, 409))
def cancel_session(
    session_id: str, request: Request, store: StoreDep, engine: EngineDep, grant: SessionCancel
) -> SessionPublic:
    record = grant.session
    cancelable = {SessionStatus.created, *ACTIVE_STATUSES}
    if not store.set_session_status(
        session_id,
        SessionStatus.canceled,
        expected=cancelable,
        failure_reason="canceled by a user",
    ):
        raise HTTPException(
            status_code=409, detail=f"Cannot cancel session {session_id}: it is {record.status}."
        )
    engine.cancel(session_id)
    store.append_log(session_id, f"session canceled by user {grant.principal.user_name!r}")
    audit.record(request, grant.principal, "session.cancel", session_id)
    return session_public(get_session_record(store, session_id))


@router.delete("/{session_id}", status_code=204, responses=errors(404, 409))
def delete_session(
    session_id: str,
    request: Request,
    store: StoreDep,
    artifacts: ArtifactsDep,
    grant: SessionDelete,
) -> Response:
    record = grant.session
    if record.status in ACTIVE_STATUSES:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot delete session {session_id}: it is {record.status}; cancel it first.",
        )
    store.delete_session(session_id)
    artifacts.delete_prefix(f"sessions/{session_id}")
    request.app.state.participant_cache.forget_session(session_id)
    audit.record(request, grant.principal, "session.delete", session_id)
    return Response(status_code=204)


@router.put(
    "/{session_id}/initial-model",
    responses={
        **BODY_RESPONSES,
        **errors(
            404,
            409,
            notes={
                409: "the session has started, or its model_config already "
                "gives strategy.params.initial_parameters"
            },
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_initial_model(
    session_id: str,
    request: Request,
    store: StoreDep,
    artifacts: ArtifactsDep,
    grant: InitialModelUpload,
) -> InitialModelPublic:
    """Give a created session its initial model: the body is a safetensors state dict
    (``application/octet-stream``; e.g. ``safetensors.torch.save_file(module.state_dict())``
    or ``safetensors.numpy.save(arrays)``), never a pickled module. The workflow starts from
    it as from ``strategy.params.initial_parameters`` (checked against the package's model
    when the session starts). A second upload before the start replaces the first."""
    data = await request.body()
    return await run_in_threadpool(
        _store_initial_model, session_id, request, store, artifacts, grant, data
    )


def _store_initial_model(
    session_id: str,
    request: Request,
    store: StateStore,
    artifacts: ArtifactStore,
    grant: SessionGrant,
    data: bytes,
) -> InitialModelPublic:
    record = grant.session
    settings: Settings = request.app.state.settings
    try:
        package = get_package(record.package_name)
        strategy = initial_model.strategy_of(package, record.model_config, record.data_config)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    if strategy is None:
        raise HTTPException(
            status_code=422,
            detail=f"Session {session_id} runs package {record.package_name!r}, which takes "
            "no initial model (its model_config has no strategy.params.initial_parameters, "
            "or it is a driver session: give the driver's strategy initial_parameters).",
        )
    if strategy.params.get("initial_parameters") is not None:
        raise HTTPException(
            status_code=409,
            detail=f"Session {session_id}: {initial_model.BOTH_GIVEN}; this one's "
            "model_config already gives strategy.params.initial_parameters.",
        )
    try:
        _, summary = initial_model.parse_initial_model(data, settings.max_model_parameters)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    with _STARTING:
        current = get_session_record(store, session_id)
        if current.status != SessionStatus.created:
            raise HTTPException(
                status_code=409,
                detail=f"Cannot set the initial model of session {session_id}: it is "
                f"{current.status}; an initial model is given before the session starts.",
            )
        public = initial_model.store_initial_model(artifacts, session_id, data, summary)
    store.append_log(
        session_id,
        f"initial model uploaded by user {grant.principal.user_name!r}: "
        f"{len(public.shapes)} tensors, {public.parameters} numbers, sha256 {public.sha256}",
    )
    audit.record(
        request, grant.principal, "session.initial_model", session_id, detail=public.sha256
    )
    return public


@router.get("/{session_id}/metrics", responses=errors(404))
def session_metrics(session_id: str, store: StoreDep, _: SessionRead) -> SessionMetricsPublic:
    rounds = store.list_rounds(session_id)
    federated: list[dict[str, Any]] = [r.federated for r in rounds]
    clients: list[dict[str, Any]] = [r.per_client for r in rounds]
    latest = federated[-1].get("loss") if federated else None
    return SessionMetricsPublic(
        session_id=session_id,
        federated_metrics=federated,
        client_metrics=clients,
        latest_global_model_federated_loss=latest,
    )


#: most numbers ``GET .../model?format=json`` writes out (about 20 bytes each as JSON text);
#: a larger model is fetched as the binary frame
MAX_JSON_MODEL_VALUES = 5_000_000


class ModelWeights(BaseModel):
    """``GET /sessions/{sid}/model?format=json``: the global model's weights as JSON (seed
    002's ``global_model``), for clients without a safetensors reader."""

    session_id: str
    package_name: str
    round: int
    global_model: dict[str, Any] = Field(description="array name -> nested list of numbers")
    shapes: dict[str, list[int]]
    dtypes: dict[str, str]
    meta: dict[str, Any] = Field(description="the frame's header: configs, round, metrics")


def _model_weights(session_id: str, data: bytes) -> ModelWeights:
    arrays, header = decode_frame(data)
    values = sum(int(a.size) for a in arrays.values())
    if values > MAX_JSON_MODEL_VALUES:
        raise HTTPException(
            status_code=422,
            detail=f"The model of session {session_id} holds {values} numbers, more than "
            f"format=json writes ({MAX_JSON_MODEL_VALUES}); fetch the binary frame "
            "(format=frame) instead.",
        )
    meta = header if isinstance(header, dict) else {}
    return ModelWeights(
        session_id=session_id,
        package_name=str(meta.get("package_name", "")),
        round=int(meta.get("round", 0)),
        global_model={name: a.tolist() for name, a in arrays.items()},
        shapes={name: list(a.shape) for name, a in arrays.items()},
        dtypes={name: str(a.dtype) for name, a in arrays.items()},
        meta=meta,
    )


@router.get(
    "/{session_id}/model",
    response_class=Response,
    responses={
        200: {
            "content": {OCTET_STREAM: {}, "application/json": {}},
            "description": "model frame; with format=json the weights as JSON (ModelWeights)",
        },
        **errors(404, 422, notes={404: "no such session, or it has no model yet"}),
    },
)
def session_model(
    session_id: str,
    request: Request,
    store: StoreDep,
    artifacts: ArtifactsDep,
    grant: ModelDownload,
    format: Annotated[
        Literal["frame", "json"],
        Query(description="frame: the safetensors frame; json: the weights as nested lists"),
    ] = "frame",
) -> Response:
    record = grant.session
    model = store.get_model(session_id)
    data = artifacts.read_bytes(model.key) if model is not None else None
    if data is None:
        raise HTTPException(
            status_code=404,
            detail=f"Session {session_id} has no model yet (it is {record.status}).",
        )
    if format == "json":
        weights = _model_weights(session_id, data)
        audit.record(request, grant.principal, "model.download", session_id)
        return JSONResponse(content=weights.model_dump(mode="json"))
    audit.record(request, grant.principal, "model.download", session_id)
    return Response(content=data, media_type=OCTET_STREAM)


@router.get("/{session_id}/logs", responses=errors(404))
def session_logs(session_id: str, store: StoreDep, _: SessionRead) -> list[SessionLogLine]:
    return [
        SessionLogLine(time=line.created_at, message=line.message)
        for line in store.list_logs(session_id)
    ]
