"""Portal session pages: the list (filtered by status, refreshed live), a session's detail
(configs, participants' shapes and dtypes, metrics plots and tables, logs) and its actions
(model download, cancel, delete), each behind the API route's own requirement."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from fedsilo.server.access import Principal, SessionGrant
from fedsilo.server.api import deps, participants, sessions
from fedsilo.server.api.deps import (
    ArtifactsDep,
    EngineDep,
    ModelDownload,
    SessionCancel,
    SessionDelete,
    SessionLister,
    SessionRead,
    StoreDep,
)
from fedsilo.server.portal.eda import eda_results
from fedsilo.server.portal.plots import line_plot
from fedsilo.server.portal.web import PortalForm, admits, render, see_other
from fedsilo.server.state import ACTIVE_STATUSES, StateStore
from fedsilo.wire import SessionKind, SessionMetricsPublic, SessionPublic, SessionStatus

__all__ = ["router"]

router = APIRouter(prefix="/sessions", include_in_schema=False)
#: the log lines a detail page shows (the newest)
LOG_LINES = 200
_CANCELABLE = {SessionStatus.created, *ACTIVE_STATUSES}


def _listed(store: StateStore, principal: Principal, status: str) -> list[SessionPublic]:
    listed = sessions.list_sessions(store, principal)  # the API's filtering by scope
    if status:
        listed = [s for s in listed if s.status == status]
    return sorted(listed, key=lambda s: s.created_at, reverse=True)


def _status_filter(status: str | None) -> str:
    if status and status not in SessionStatus.__members__:
        known = ", ".join(SessionStatus)
        raise HTTPException(
            status_code=422, detail=f"status: expected one of {known} or nothing; got {status!r}."
        )
    return status or ""


@router.get("", response_class=HTMLResponse)
def session_list(
    request: Request, store: StoreDep, principal: SessionLister, status: str | None = None
) -> HTMLResponse:
    wanted = _status_filter(status)
    return render(
        request,
        "sessions.html",
        principal,
        sessions=_listed(store, principal, wanted),
        status_filter=wanted,
        statuses=list(SessionStatus),
    )


@router.get("/rows", response_class=HTMLResponse)
def session_rows(
    request: Request, store: StoreDep, principal: SessionLister, status: str | None = None
) -> HTMLResponse:
    """The list's table body alone: what the page polls to stay current."""
    wanted = _status_filter(status)
    return render(
        request, "session_rows.html", principal, sessions=_listed(store, principal, wanted)
    )


def _series(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, list[float | None]]:
    return {
        key: [float(r[key]) if isinstance(r.get(key), int | float) else None for r in rows]
        for key in keys
    }


def _plots(metrics: SessionMetricsPublic) -> list[Any]:
    """One plot of the losses, one of the other federated metrics (their scales differ)."""
    rows = metrics.federated_metrics
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, int | float)})
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if "loss" not in k and not k.startswith("num_")]
    plots = [line_plot(_series(rows, losses or keys), "Federated loss per round")]
    if losses and others:
        plots.append(line_plot(_series(rows, others), "Federated metrics per round"))
    return plots


def _client_table(metrics: SessionMetricsPublic) -> tuple[list[str], list[dict[str, Any]]]:
    """Per-client metrics: one row per (round, client), one column per metric."""
    columns: set[str] = set()
    rows = []
    for number, per_client in enumerate(metrics.client_metrics, start=1):
        for client, values in sorted(per_client.items()):
            columns.update(values)
            rows.append({"round": number, "client": client, "values": values})
    return sorted(columns), rows


def _detail(request: Request, store: StoreDep, grant: SessionGrant) -> dict[str, Any]:
    """What the detail page and its live fragment show, read through the API's functions."""
    sid, principal, record = grant.session.id, grant.principal, grant.session
    session = sessions.get_session(grant)
    metrics = sessions.session_metrics(sid, store, grant)
    client_columns, client_rows = _client_table(metrics)
    federated_keys = sorted({k for r in metrics.federated_metrics for k in r})
    return {
        "session": session,
        "ended": session.status.ended,
        "participants": participants.list_participants(sid, store, grant),
        "metrics": metrics,
        "federated_keys": federated_keys,
        # an EDA session's rounds count columns and datasets: its results are the picture
        "plots": _plots(metrics) if record.kind != SessionKind.eda else [],
        "client_columns": client_columns,
        "client_rows": client_rows,
        "logs": sessions.session_logs(sid, store, grant)[-LOG_LINES:],
        "can_download": admits(deps.ModelDownload, principal, record)
        and store.get_model(sid) is not None,
        "can_cancel": admits(deps.SessionCancel, principal, record)
        and session.status in _CANCELABLE,
        "can_delete": admits(deps.SessionDelete, principal, record)
        and session.status not in ACTIVE_STATUSES,
    }


@router.get("/{session_id}", response_class=HTMLResponse)
def session_detail(
    request: Request, store: StoreDep, artifacts: ArtifactsDep, grant: SessionRead
) -> HTMLResponse:
    context = _detail(request, store, grant)
    # An EDA session's results are its "model": shown to a token that may download them.
    context["eda"] = (
        eda_results(request, store, artifacts, grant)
        if grant.session.kind == SessionKind.eda and context["can_download"]
        else []
    )
    configs = {
        "model_config": json.dumps(context["session"].model_config_, indent=2, sort_keys=True),
        "data_config": json.dumps(context["session"].data_config, indent=2, sort_keys=True),
    }
    return render(
        request, "session.html", grant.principal, configs=configs, fragment=False, **context
    )


@router.get("/{session_id}/live", response_class=HTMLResponse)
def session_live(request: Request, store: StoreDep, grant: SessionRead) -> HTMLResponse:
    """The detail page's changing part alone (status, round, plots, tables, logs, actions):
    what the page polls until the session ends."""
    context = _detail(request, store, grant)
    return render(request, "session_live.html", grant.principal, fragment=True, **context)


@router.get("/{session_id}/model")
def session_model(
    session_id: str,
    request: Request,
    store: StoreDep,
    artifacts: ArtifactsDep,
    grant: ModelDownload,
) -> Response:
    """The API's model download, saved by the browser as a file."""
    response = sessions.session_model(session_id, request, store, artifacts, grant)
    name = f"fedsilo-{session_id}-{grant.session.package_name}.model"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@router.post("/{session_id}/cancel")
def session_cancel(
    session_id: str,
    request: Request,
    store: StoreDep,
    engine: EngineDep,
    grant: SessionCancel,
    _: PortalForm,
) -> Response:
    sessions.cancel_session(session_id, request, store, engine, grant)
    return see_other(f"/sessions/{session_id}")


@router.post("/{session_id}/delete")
def session_delete(
    session_id: str,
    request: Request,
    store: StoreDep,
    artifacts: ArtifactsDep,
    grant: SessionDelete,
    _: PortalForm,
) -> Response:
    sessions.delete_session(session_id, request, store, artifacts, grant)
    return see_other("/sessions")
