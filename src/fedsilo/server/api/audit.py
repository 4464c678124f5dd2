"""The audit log (admin): who did what to which thing, filtered."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from fedsilo.server.api.deps import ACCESS_RESPONSES, AdminToken, StoreDep
from fedsilo.server.api.users import find_user
from fedsilo.server.state import AuditRecord
from fedsilo.wire import AuditEntry

__all__ = ["router"]

router = APIRouter(prefix="/audit", tags=["audit"], responses=ACCESS_RESPONSES)


def _iso_8601(value: Any) -> Any:
    # pydantic would also read "0.5" as seconds since the epoch; the contract says date-time
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601)]


def audit_entry(entry: AuditRecord) -> AuditEntry:
    return AuditEntry(
        seq=entry.seq,
        at=entry.at,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        user_id=entry.user_id,
        token_id=entry.token_id,
        address=entry.address,
        detail=entry.detail,
    )


@router.get("")
def list_audit(
    store: StoreDep,
    _: AdminToken,
    user: str | None = Query(
        default=None, description="a user's name or id (a deleted user's id still matches)"
    ),
    action: str | None = Query(
        default=None, description="exact, or a dotted prefix: 'session' matches session.create"
    ),
    target: str | None = Query(default=None, description="a session id, token id, user name"),
    since: IsoDateTime | None = Query(default=None, description="entries at or after (ISO 8601)"),
    limit: int = Query(default=1000, ge=1, le=10_000, description="the newest this many"),
) -> list[AuditEntry]:
    """Entries matching every filter given, oldest first."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a time without a zone is read as UTC
    user_id = None
    if user is not None:
        found = find_user(store, user)
        user_id = found.id if found is not None else user
    entries = store.list_audit(
        user_id=user_id, action=action, target=target, since=since, limit=limit
    )
    return [audit_entry(e) for e in entries]
