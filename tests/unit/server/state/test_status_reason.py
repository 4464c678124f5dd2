"""set_status_reason: the note a waiting session shows (a client's refusal), over every state
store: the in-memory one, SQLite, and PostgreSQL when ``FEDSILO_TEST_POSTGRES_URL`` names a
throwaway database, as in ``test_state_store.py``."""

from __future__ import annotations

from fedsilo.server.state import SessionRecord, StateStore, utcnow
from fedsilo.wire import SessionStatus

WAITING = {SessionStatus.created, SessionStatus.pending}


def new_session(store: StateStore, status: SessionStatus = SessionStatus.created) -> str:
    now = utcnow()
    store.create_session(
        SessionRecord(
            id="0123456789", name="t", description="d", kind="hfl", package_name="echo",
            min_num_clients=2, num_rounds=3, model_config={}, data_config={"columns": ["a"]},
            status=status, created_at=now, updated_at=now, created_by="admin",
        )
    )  # fmt: skip
    return "0123456789"


def reason_of(store: StateStore, session_id: str) -> str | None:
    record = store.get_session(session_id)
    assert record is not None
    return record.failure_reason


def test_a_waiting_session_takes_a_reason_and_keeps_its_status(store: StateStore) -> None:
    sid = new_session(store)

    assert store.set_status_reason(sid, "client 'b' refused to join: x", expected=WAITING)
    record = store.get_session(sid)
    assert record is not None and record.status is SessionStatus.created
    assert record.failure_reason == "client 'b' refused to join: x"

    assert store.set_session_status(sid, SessionStatus.pending, expected={SessionStatus.created})
    assert reason_of(store, sid) == "client 'b' refused to join: x"  # still waiting


def test_running_clears_it_and_an_ended_session_keeps_its_own(store: StateStore) -> None:
    sid = new_session(store, SessionStatus.pending)
    assert store.set_status_reason(sid, "client 'b' refused", expected=WAITING)

    assert store.set_session_status(sid, SessionStatus.running, expected={SessionStatus.pending})
    assert reason_of(store, sid) is None
    assert not store.set_status_reason(sid, "late", expected=WAITING)
    assert reason_of(store, sid) is None

    assert store.set_session_status(
        sid, SessionStatus.failed, expected={SessionStatus.running}, failure_reason="boom"
    )
    assert not store.set_status_reason(sid, "later", expected=WAITING)
    assert reason_of(store, sid) == "boom"
    assert not store.set_status_reason("ffffffffff", "x", expected=WAITING)  # unknown session
