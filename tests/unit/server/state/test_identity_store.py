"""Users, their tokens, session ownership and the audit log, over every state store: the
in-memory one, SQLite, and PostgreSQL when ``FEDSILO_TEST_POSTGRES_URL`` names a throwaway
database (every test then starts empty), as in ``test_state_store.py``."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy

from fedsilo.server.state import (
    AuditRecord,
    SessionRecord,
    SqlStore,
    StateStore,
    TokenRecord,
    UserRecord,
    utcnow,
)
from fedsilo.server.state.tables import Base
from fedsilo.wire import SessionStatus

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=utcnow().tzinfo)


def user(name: str, *, minutes: int = 0, **fields: object) -> UserRecord:
    record = UserRecord(
        id=f"{name[:10]:0>10}@fedsilo",
        name=name,
        user_type="generated",
        created_at=T0 + timedelta(minutes=minutes),
        created_by="0000000000@fedsilo",
    )
    return replace(record, **fields)  # type: ignore[arg-type]


def token(token_id: str, user_id: str | None, *, minutes: int = 0, **fields: object) -> TokenRecord:
    record = TokenRecord(
        id=token_id,
        name=token_id,
        token_hash=f"hash-{token_id}",
        created_at=T0 + timedelta(minutes=minutes),
        scopes=("read_user_session",),
        user_id=user_id,
        expires_at=T0 + timedelta(days=30),
    )
    return replace(record, **fields)  # type: ignore[arg-type]


def session(session_id: str, owner_id: str | None, *, minutes: int = 0) -> SessionRecord:
    at = T0 + timedelta(minutes=minutes)
    return SessionRecord(
        id=session_id,
        name="t",
        description="",
        kind="hfl",
        package_name="echo",
        min_num_clients=1,
        num_rounds=1,
        model_config={},
        data_config={},
        status=SessionStatus.created,
        created_at=at,
        updated_at=at,
        created_by="demo",
        owner_id=owner_id,
    )


def entry(action: str, target: str, *, minutes: int = 0, **fields: object) -> AuditRecord:
    record = AuditRecord(at=T0 + timedelta(minutes=minutes), action=action, target=target)
    return replace(record, **fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- users


def test_a_user_reads_back_by_id_and_by_name(store: StateStore) -> None:
    alice = user("alice", user_type="human", created_by=None)
    store.add_user(alice)
    assert store.get_user(alice.id) == alice
    assert store.get_user_by_name("alice") == alice
    found = store.get_user(alice.id)
    assert found is not None and found.created_at.tzinfo is not None and found.active
    assert store.get_user("nobody@fedsilo") is None and store.get_user_by_name("nobody") is None


def test_a_taken_user_name_or_id_is_a_value_error(store: StateStore) -> None:
    store.add_user(user("alice"))
    with pytest.raises(ValueError, match="'alice' already exists"):
        store.add_user(user("alice", id="ffffffffff@fedsilo"))
    with pytest.raises(ValueError, match="already exists"):
        store.add_user(user("alice-two", id=user("alice").id))
    assert [u.name for u in store.list_users()] == ["alice"]


def test_users_are_listed_oldest_first(store: StateStore) -> None:
    store.add_user(user("carol", minutes=2))
    store.add_user(user("alice", minutes=0))
    store.add_user(user("bob", minutes=1))
    assert [u.name for u in store.list_users()] == ["alice", "bob", "carol"]


def test_a_deleted_users_name_can_be_taken_again_with_a_new_id(store: StateStore) -> None:
    old = user("alice")
    store.add_user(old)
    assert store.delete_user(old.id) == old
    assert store.delete_user(old.id) is None
    assert store.get_user(old.id) is None and store.get_user_by_name("alice") is None
    new = user("alice", id="aaaaaaaaaa@fedsilo")
    store.add_user(new)
    assert store.get_user_by_name("alice") == new


# ------------------------------------------------------------------------ tokens


def test_tokens_are_found_by_id_and_listed_per_user(store: StateStore) -> None:
    alice, bob = user("alice"), user("bob")
    store.add_user(alice)
    store.add_user(bob)
    store.add_token(token("t2", alice.id, minutes=2))
    store.add_token(token("t1", alice.id, minutes=1))
    store.add_token(token("t3", bob.id, minutes=3))
    store.revoke_token("t1", at=T0)
    found = store.get_token("t2")
    assert (
        found is not None and found.user_id == alice.id and found.scopes == ("read_user_session",)
    )
    assert store.get_token("nope") is None
    # revoked tokens are listed too
    assert [t.id for t in store.list_user_tokens(alice.id)] == ["t1", "t2"]
    assert [t.id for t in store.list_user_tokens(bob.id)] == ["t3"]
    assert store.list_user_tokens("nobody@fedsilo") == []


def test_deleting_a_user_revokes_their_live_tokens_only(store: StateStore) -> None:
    alice, bob = user("alice"), user("bob")
    store.add_user(alice)
    store.add_user(bob)
    earlier = T0 + timedelta(hours=1)
    store.add_token(token("revoked", alice.id, revoked_at=earlier))
    store.add_token(token("live", alice.id, minutes=1))
    store.add_token(token("bobs", bob.id))
    deleted_at = T0 + timedelta(hours=2)
    assert store.delete_user(alice.id, at=deleted_at) == alice

    by_id = {t.id: t for t in store.list_tokens()}
    assert by_id["revoked"].revoked_at == earlier  # the first revocation is kept
    assert by_id["live"].revoked_at == deleted_at
    assert by_id["bobs"].revoked_at is None
    # the tokens stay, still naming the deleted user (the 401 says whose they were)
    assert [t.user_id for t in store.list_user_tokens(alice.id)] == [alice.id, alice.id]


def test_no_reader_sees_a_user_half_deleted(store: StateStore) -> None:
    # delete_user is one transaction: a reader never finds the user gone while a token of
    # theirs is live, nor a token revoked by the deletion while the user is still there.
    users = [user(f"user{i:02}", minutes=i) for i in range(20)]
    for u in users:
        store.add_user(u)
        for k in range(3):
            store.add_token(token(f"{u.name}-{k}", u.id, minutes=k))
    problems: list[str] = []
    deleting = threading.Event()

    def read() -> None:
        while deleting.is_set():
            for u in users:
                # tokens first, then the user: a revocation seen implies the user is gone
                revoked = any(t.revoked_at is not None for t in store.list_user_tokens(u.id))
                if revoked and store.get_user(u.id) is not None:
                    problems.append(f"{u.name}: a token revoked, the user still there")
                # the user first, then the tokens: a user gone implies no live token
                if store.get_user(u.id) is None and any(
                    t.revoked_at is None for t in store.list_user_tokens(u.id)
                ):
                    problems.append(f"{u.name}: the user gone, a token still live")

    deleting.set()
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for u in users:
            assert store.delete_user(u.id) == u
    finally:
        deleting.clear()
        reader.join(timeout=30)
    assert problems == []
    assert all(t.revoked_at is not None for t in store.list_tokens())


def test_tokens_from_before_users_are_adopted_by_one_user(store: StateStore) -> None:
    admin = user("admin", user_type="human")
    store.add_user(admin)
    store.add_token(token("old1", None, minutes=0))
    store.add_token(token("old2", None, minutes=1, revoked_at=T0))
    store.add_token(token("owned", "bbbbbbbbbb@fedsilo", minutes=2))
    assert store.adopt_tokens(admin.id) == 2
    assert [t.id for t in store.list_user_tokens(admin.id)] == ["old1", "old2"]
    owned = store.get_token("owned")
    assert owned is not None and owned.user_id == "bbbbbbbbbb@fedsilo"
    assert store.adopt_tokens(admin.id) == 0  # nothing left without a user


# ---------------------------------------------------------------------- sessions


def test_a_sessions_owner_id_round_trips(store: StateStore) -> None:
    store.create_session(session("0000000001", "aaaaaaaaaa@fedsilo", minutes=0))
    store.create_session(session("0000000002", None, minutes=1))
    got = store.get_session("0000000001")
    assert got is not None and got.owner_id == "aaaaaaaaaa@fedsilo"
    assert [(s.id, s.owner_id) for s in store.list_sessions()] == [
        ("0000000002", None),
        ("0000000001", "aaaaaaaaaa@fedsilo"),
    ]
    assert store.set_session_status(
        "0000000001", SessionStatus.running, expected=[SessionStatus.created]
    )
    running = store.list_sessions(statuses=[SessionStatus.running])
    assert [s.owner_id for s in running] == ["aaaaaaaaaa@fedsilo"]


def test_a_deleted_users_sessions_stay_owned_by_their_id(store: StateStore) -> None:
    alice = user("alice")
    store.add_user(alice)
    store.create_session(session("0000000001", alice.id))
    store.delete_user(alice.id)
    got = store.get_session("0000000001")
    assert got is not None and got.owner_id == alice.id


def test_an_older_database_gains_the_owner_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sqlalchemy.create_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:  # the sessions table as it was before owners
        conn.execute(sqlalchemy.text("ALTER TABLE sessions DROP COLUMN owner_id"))
    engine.dispose()

    store = SqlStore(url)
    try:
        store.create_session(session("0000000001", "aaaaaaaaaa@fedsilo"))
        got = store.get_session("0000000001")
        assert got is not None and got.owner_id == "aaaaaaaaaa@fedsilo"
    finally:
        store.close()


# ------------------------------------------------------------------------- audit


def test_audit_entries_get_increasing_seqs_and_read_back_whole(store: StateStore) -> None:
    full = entry(
        "session.create",
        "0000000001",
        outcome="ok",
        user_id="aaaaaaaaaa@fedsilo",
        token_id="0123456789abcdef",
        address="127.0.0.1",
        detail="name='t'",
    )
    store.append_audit(full)
    store.append_audit(entry("session.start", "0000000001"))
    first, second = store.list_audit()
    assert first == replace(full, seq=first.seq) and first.at.tzinfo is not None
    assert 0 < first.seq < second.seq


def test_audit_filters_match_every_given_field(store: StateStore) -> None:
    alice, bob = "aaaaaaaaaa@fedsilo", "bbbbbbbbbb@fedsilo"
    store.append_audit(entry("session.create", "s1", minutes=0, user_id=alice))
    store.append_audit(entry("session.start", "s1", minutes=1, user_id=bob))
    store.append_audit(entry("sessions.weird", "s2", minutes=2, user_id=alice))
    store.append_audit(entry("session", "s2", minutes=3, user_id=alice, outcome="denied"))
    store.append_audit(entry("token.create", "t1", minutes=4, user_id=alice))
    store.append_audit(entry("session_x.create", "s3", minutes=5))

    def targets(**filters: object) -> list[tuple[str, str]]:
        return [(e.action, e.target) for e in store.list_audit(**filters)]  # type: ignore[arg-type]

    assert len(targets()) == 6
    # a dotted prefix, or the exact action; never a bare string prefix
    assert targets(action="session") == [
        ("session.create", "s1"),
        ("session.start", "s1"),
        ("session", "s2"),
    ]
    assert targets(action="session.start") == [("session.start", "s1")]
    assert targets(action="session.st") == []
    assert targets(action="session_") == []  # '_' is not a wildcard
    assert targets(action="%") == []
    assert [e.user_id for e in store.list_audit(user_id=bob)] == [bob]
    assert targets(target="s2") == [("sessions.weird", "s2"), ("session", "s2")]
    assert targets(since=T0 + timedelta(minutes=4)) == [
        ("token.create", "t1"),
        ("session_x.create", "s3"),
    ]
    assert targets(user_id=alice, action="session", target="s2", since=T0) == [("session", "s2")]


def test_audit_limit_keeps_the_newest_entries_oldest_first(store: StateStore) -> None:
    for i in range(10):
        store.append_audit(entry("session.create", f"s{i}", minutes=i))
    assert [e.target for e in store.list_audit(limit=3)] == ["s7", "s8", "s9"]
    assert [e.target for e in store.list_audit(limit=3, since=T0 + timedelta(minutes=2))] == [
        "s7",
        "s8",
        "s9",
    ]
    assert len(store.list_audit(limit=100)) == 10
    assert store.list_audit(limit=0) == []


def test_entries_of_one_instant_keep_the_order_they_were_appended(store: StateStore) -> None:
    for i in range(5):
        store.append_audit(entry("user.create", f"u{i}", minutes=0))
    assert [e.target for e in store.list_audit()] == [f"u{i}" for i in range(5)]
    assert [e.target for e in store.list_audit(limit=2)] == ["u3", "u4"]
