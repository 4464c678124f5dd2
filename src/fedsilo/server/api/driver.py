"""The driver's routes: the session's owner runs the strategy in their own process.

A session of package ``arrays`` with ``model_config["driver"] = true`` runs no rounds on the
server (:mod:`fedsilo.packages.arrays.driver`); the SDK's ``Session.run`` drives it here::

    POST /sessions/{sid}/driver/tasks                 frame: arrays + {"kind", "meta",
                                                      "to": [client names] | null, "round",
                                                      "timeout"} -> {"group", "to"}
    GET  /sessions/{sid}/driver/tasks/{group}/replies frame: arrays "<i>/<name>" + {"replies":
                                                      [{"client_name", "meta"}], "failures"}
    POST /sessions/{sid}/driver/rounds                {"round", "federated", "per_client"}
    POST /sessions/{sid}/driver/finish                frame: the final arrays + {"meta"}

Who: an ``admin`` token on any session, or a ``start_session`` token of the session's owner
(driving is running the session: the owner who may start it may drive it, and nobody else's
analyst may task its participants). Each reply still passes the task's screening; the
participants are the session's own, with their own credentials.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fedsilo.errors import FedsiloError, WireError
from fedsilo.federation import Failure, SessionContext, Task
from fedsilo.packages.arrays.driver import INBOXES, DriverInbox
from fedsilo.scopes import Scope
from fedsilo.server import audit
from fedsilo.server.access import SessionGrant, session_access
from fedsilo.server.api.deps import ACCESS_RESPONSES, BODY_RESPONSES, errors
from fedsilo.wire import OCTET_STREAM, decode_frame, encode_frame

__all__ = ["router"]

router = APIRouter(
    prefix="/sessions/{session_id}/driver", tags=["driver"], responses=ACCESS_RESPONSES
)

SessionDrive = Annotated[
    SessionGrant, Depends(session_access(Scope.admin, Scope.start_session, "session.drive"))
]
KINDS = ("init", "fit", "evaluate")
#: longest a driver's task may stay unanswered (a day), and the default
MAX_TASK_TIMEOUT = 86_400.0
DEFAULT_TASK_TIMEOUT = 600.0


class DriverTasksSent(BaseModel):
    group: str
    to: list[str] = Field(description="the client names the tasks went to")


class DriverRound(BaseModel):
    round: int = Field(ge=1)
    federated: dict[str, float] = Field(default_factory=dict)
    per_client: dict[str, dict[str, float]] = Field(default_factory=dict)


def _inbox(session_id: str) -> DriverInbox:
    inbox = INBOXES.get(session_id)
    if inbox is None:
        raise HTTPException(
            status_code=409,
            detail=f"Session {session_id} is not waiting for a driver: create it with "
            "package_name 'arrays' and model_config driver true, start it, and let its "
            "clients join.",
        )
    return inbox


def _frame(data: bytes, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        arrays, header = decode_frame(data)
    except WireError as exc:
        raise HTTPException(status_code=422, detail=f"The {what} body is no frame: {exc}") from None
    if not isinstance(header, dict):
        raise HTTPException(status_code=422, detail=f"The {what} frame's header must be an object.")
    return arrays, header


async def _call(inbox: DriverInbox, action: Any) -> Any:
    try:
        return await run_in_threadpool(inbox.call, action)
    except FedsiloError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


@router.post("/tasks", responses=errors(404, 409, 422))
async def send_tasks(session_id: str, request: Request, grant: SessionDrive) -> DriverTasksSent:
    inbox = _inbox(session_id)
    arrays, header = _frame(await request.body(), "driver task")
    kind, meta, names = header.get("kind"), header.get("meta", {}), header.get("to")
    server_round, timeout = header.get("round", 0), header.get("timeout", DEFAULT_TASK_TIMEOUT)
    if kind not in KINDS:
        raise HTTPException(
            status_code=422, detail=f"kind must be one of {', '.join(KINDS)}. Got {kind!r}."
        )
    if not isinstance(meta, dict):
        raise HTTPException(status_code=422, detail="meta must be a JSON object.")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise HTTPException(status_code=422, detail="to must be a list of client names or null.")
    if not isinstance(server_round, int) or server_round < 0:
        raise HTTPException(
            status_code=422, detail=f"round must be an integer >= 0. Got {server_round!r}."
        )
    if not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TASK_TIMEOUT:
        raise HTTPException(
            status_code=422, detail=f"timeout must be in (0, {MAX_TASK_TIMEOUT:g}] seconds."
        )

    def send(ctx: SessionContext) -> DriverTasksSent:
        participants = ctx.participants()
        chosen = (
            participants if names is None else [p for p in participants if p.client_name in names]
        )
        unknown = sorted(set(names or ()) - {p.client_name for p in participants})
        if unknown or not chosen:
            raise FedsiloError(f"No participant named {unknown or names} in the session.")
        group = ctx.send(
            [Task(to=p, kind=kind, meta=meta, arrays=arrays, round=server_round) for p in chosen],
            timeout=float(timeout),
        )
        return DriverTasksSent(group=inbox.keep(group), to=[p.client_name for p in chosen])

    sent: DriverTasksSent = await _call(inbox, send)
    audit.record(request, grant.principal, "session.drive", session_id)
    return sent


@router.get(
    "/tasks/{group}/replies",
    response_class=Response,
    responses={200: {"content": {OCTET_STREAM: {}}}, **errors(404, 409)},
)
def task_replies(session_id: str, group: str, _: SessionDrive) -> Response:
    """Every outcome of the group, once all are in (or timed out): a frame."""
    inbox = _inbox(session_id)
    sent = inbox.groups.pop(group, None)
    if sent is None:
        raise HTTPException(
            status_code=404, detail=f"Session {session_id} has no driver task group {group!r}."
        )
    replies: list[dict[str, Any]] = []
    failures: list[str] = []
    arrays: dict[str, Any] = {}
    for outcome in sent.outcomes():
        if isinstance(outcome, Failure):
            failures.append(str(outcome))
            continue
        index = len(replies)
        replies.append({"client_name": outcome.participant.client_name, "meta": outcome.meta})
        arrays.update({f"{index}/{name}": a for name, a in outcome.arrays.items()})
    body = encode_frame(arrays, {"replies": replies, "failures": failures})
    return Response(content=body, media_type=OCTET_STREAM)


@router.post("/rounds", responses={**BODY_RESPONSES, **errors(404, 409)})
async def record_round(
    session_id: str, body: DriverRound, request: Request, _: SessionDrive
) -> DriverRound:
    inbox = _inbox(session_id)

    def record(ctx: SessionContext) -> None:
        ctx.record_round(body.round, federated=body.federated, per_client=body.per_client)

    await _call(inbox, record)
    return body


@router.post("/finish", responses=errors(404, 409, 422))
async def finish(session_id: str, request: Request, grant: SessionDrive) -> dict[str, Any]:
    inbox = _inbox(session_id)
    arrays, header = _frame(await request.body(), "driver finish")
    meta = header.get("meta", {})
    server_round = header.get("round", 0)
    if not isinstance(meta, dict) or not isinstance(server_round, int):
        raise HTTPException(status_code=422, detail="meta must be an object and round an integer.")

    def save(ctx: SessionContext) -> None:
        ctx.save_model(arrays, meta={**meta, "driver": True}, round=server_round)
        inbox.finished.set()

    await _call(inbox, save)
    audit.record(request, grant.principal, "session.drive", session_id)
    return {"session_id": session_id, "round": server_round}
