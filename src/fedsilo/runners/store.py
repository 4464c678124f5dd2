"""Participant ids of the in-process runner, which a restarted run finds again.

A server restart keeps its participants' ids in its database, and a workflow may checkpoint
them (eda keeps which participant profiled what). The in-process runner has no database to
keep between two contexts (a crashed one, then a resumed one), so its memory store's
participant ids are a function of the session and the client name instead of random
(:class:`~fedsilo.server.state.memory.MemoryStore`'s ``participant_ids``).
"""

from __future__ import annotations

import hashlib

__all__ = ["participant_id"]


def participant_id(session_id: str, client_name: str) -> str:
    """16 hex digits, like the store's random ids."""
    return hashlib.sha256(f"{session_id}\0{client_name}".encode()).hexdigest()[:16]
