"""The audit log: who did what to which thing, from where, and whether it was allowed.

Every state-changing call (session create/start/cancel/delete, model download, token create
and revoke, user create and delete, participant join) records one entry after it succeeded;
a call refused on a session (a missing scope, another user's session) records one with
``outcome="denied"``. An entry names the user id and token id (the seed: "Tokens are tied
to user identities through a unique ID, which is logged with each user action"), the action,
the target (a session id, token id or user name), the caller's address and the time -- never
a secret. Both functions are synchronous: routes call them from their thread-pool half.
"""

from __future__ import annotations

from fastapi import Request

from fedsilo.server.access import Principal
from fedsilo.server.auth import client_address
from fedsilo.server.state import AuditRecord, StateStore, utcnow

__all__ = ["record", "record_denied"]


def record(
    request: Request,
    principal: Principal,
    action: str,
    target: str,
    outcome: str = "ok",
    detail: str | None = None,
) -> None:
    """Append one entry: ``principal`` did ``action`` (dotted, e.g. ``session.create``) on
    ``target``."""
    store: StateStore = request.app.state.store
    store.append_audit(
        AuditRecord(
            at=utcnow(),
            action=action,
            target=target,
            outcome=outcome,
            user_id=principal.user_id,
            token_id=principal.token_id,
            address=client_address(request),
            detail=detail,
        )
    )


def record_denied(
    request: Request,
    principal: Principal,
    action: str,
    target: str,
    detail: str | None = None,
) -> None:
    """Append the entry of a refused call (``outcome="denied"``)."""
    record(request, principal, action, target, outcome="denied", detail=detail)
