"""The memory store, with participant ids that a restarted run finds again.

A server restart keeps its participants' ids in its database, and a workflow may checkpoint
them (eda keeps which participant profiled what). The in-process runner has no database to
keep between two contexts (a crashed one, then a resumed one), so its participant ids are a
function of the session and the client name instead of random.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fedsilo.server.state import ParticipantRecord
from fedsilo.server.state.memory import MemoryStore

__all__ = ["LocalStore", "participant_id"]


def participant_id(session_id: str, client_name: str) -> str:
    """16 hex digits, like the store's random ids."""
    return hashlib.sha256(f"{session_id}\0{client_name}".encode()).hexdigest()[:16]


class LocalStore(MemoryStore):
    """A :class:`MemoryStore` whose participant ids are :func:`participant_id`."""

    def join_participant(
        self,
        session_id: str,
        client_name: str,
        dataset: Mapping[str, Any],
        *,
        credential_hash: str,
        public_key: str,
        at: datetime | None = None,
    ) -> tuple[ParticipantRecord, bool]:
        record, created = super().join_participant(
            session_id,
            client_name,
            dataset,
            credential_hash=credential_hash,
            public_key=public_key,
            at=at,
        )
        if not created:
            return record, created
        # Re-keyed under the lock the store's own writes take, before anyone saw the id.
        record = dataclasses.replace(record, id=participant_id(session_id, client_name))
        with self._lock:
            random_id = self._by_name[(session_id, client_name)]
            del self._participants[random_id]
            self._participants[record.id] = record
            self._by_name[(session_id, client_name)] = record.id
        return dataclasses.replace(record), True
