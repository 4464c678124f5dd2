"""What the server persists: the state store protocol, its SQL and in-memory
implementations, and the artifact store for model frames and checkpoints.

``open_store(url)`` picks the implementation: ``memory://`` keeps everything in this
process; any other URL is a SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``).
"""

from __future__ import annotations

from fedsilo.server.state.artifacts import ArtifactStore
from fedsilo.server.state.memory import MemoryStore
from fedsilo.server.state.protocol import ACTIVE_STATUSES, StateStore
from fedsilo.server.state.records import (
    AuditRecord,
    LogRecord,
    ModelRecord,
    ParticipantRecord,
    RoundRecord,
    SessionRecord,
    SessionWrites,
    TaskCompletion,
    TaskRecord,
    TaskStatus,
    TokenRecord,
    UserRecord,
    utcnow,
)
from fedsilo.server.state.sql import SqlStore

__all__ = [
    "ACTIVE_STATUSES",
    "MEMORY_URL",
    "ArtifactStore",
    "AuditRecord",
    "LogRecord",
    "MemoryStore",
    "ModelRecord",
    "ParticipantRecord",
    "RoundRecord",
    "SessionRecord",
    "SessionWrites",
    "SqlStore",
    "StateStore",
    "TaskCompletion",
    "TaskRecord",
    "TaskStatus",
    "TokenRecord",
    "UserRecord",
    "open_store",
    "utcnow",
]

#: the state URL that selects :class:`MemoryStore`
MEMORY_URL = "memory://"


def open_store(url: str) -> StateStore:
    """The state store for ``url``: :class:`MemoryStore` for ``memory://``, else SQL."""
    if url == MEMORY_URL:
        return MemoryStore()
    return SqlStore(url)
