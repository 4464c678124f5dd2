"""Temporary alias of :mod:`fedsilo.server.state.tables` for the engine and the participants
router, which still use the tables directly; removed when they call the state store."""

from fedsilo.server.state.tables import (
    Base,
    ModelRow,
    ParticipantRow,
    RoundRow,
    SessionLogRow,
    SessionRow,
    TaskRow,
    TokenRow,
    utcnow,
)

__all__ = [
    "Base",
    "ModelRow",
    "ParticipantRow",
    "RoundRow",
    "SessionLogRow",
    "SessionRow",
    "TaskRow",
    "TokenRow",
    "utcnow",
]
