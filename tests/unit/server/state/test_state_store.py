"""One suite over every state store: the in-memory one, SQLite, and PostgreSQL when
``FEDSILO_TEST_POSTGRES_URL`` names a throwaway database (every test then starts empty)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from fedsilo.server.state import (
    ACTIVE_STATUSES,
    MemoryStore,
    ModelRecord,
    RoundRecord,
    SessionRecord,
    SessionWrites,
    SqlStore,
    StateStore,
    TaskCompletion,
    TaskRecord,
    TaskStatus,
    TokenRecord,
    open_store,
    utcnow,
)
from fedsilo.wire import SessionStatus

DATASET = {"train_rows": 5, "test_rows": 1, "columns": [{"name": "a", "dtype": "float64"}]}
KEY = "A" * 43  # a well-formed public key


def new_session(store: StateStore, session_id: str = "0123456789", **fields: object) -> str:
    now = utcnow()
    record = SessionRecord(
        id=session_id,
        name="t",
        description="d",
        kind="hfl",
        package_name="echo",
        min_num_clients=2,
        num_rounds=3,
        model_config={"payload_size": 4},
        data_config={"columns": ["a"]},
        status=SessionStatus.created,
        created_at=now,
        updated_at=now,
        created_by="admin",
    )
    store.create_session(replace(record, **fields))  # type: ignore[arg-type]
    return session_id


def join(store: StateStore, session_id: str, name: str) -> str:
    participant, created = store.join_participant(
        session_id, name, DATASET, credential_hash=f"hash-{name}", public_key=KEY
    )
    assert created
    return participant.id


def queued(session_id: str, participant_id: str, task_id: str) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        session_id=session_id,
        participant_id=participant_id,
        kind="fit",
        round=1,
        meta={"round": 1},
        created_at=utcnow(),
    )


def test_the_implementations_satisfy_the_protocol(tmp_path: Path) -> None:
    sql = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(sql, StateStore) and isinstance(MemoryStore(), StateStore)
    sql.close()


# ---------------------------------------------------------------------- sessions


def test_a_session_reads_back_as_it_was_stored(store: StateStore) -> None:
    sid = new_session(store)
    record = store.get_session(sid)
    assert record is not None and record.status is SessionStatus.created
    assert record.model_config == {"payload_size": 4} and record.created_by == "admin"
    assert record.created_at.tzinfo is not None
    assert store.get_session("ffffffffff") is None
    with pytest.raises(ValueError, match="already exists"):
        new_session(store)


def test_sessions_list_newest_first_and_by_status(store: StateStore) -> None:
    now = utcnow()
    new_session(store, "aaaaaaaaaa", created_at=now - timedelta(seconds=2))
    new_session(store, "bbbbbbbbbb", created_at=now - timedelta(seconds=1))
    new_session(store, "cccccccccc", created_at=now, status=SessionStatus.running)
    assert [s.id for s in store.list_sessions()] == ["cccccccccc", "bbbbbbbbbb", "aaaaaaaaaa"]
    active = store.list_sessions(statuses=ACTIVE_STATUSES)
    assert [s.id for s in active] == ["cccccccccc"]


def test_status_moves_only_from_the_expected_statuses(store: StateStore) -> None:
    sid = new_session(store)
    created = {SessionStatus.created}
    assert store.set_session_status(sid, SessionStatus.pending, expected=created)
    assert not store.set_session_status(sid, SessionStatus.pending, expected=created)
    assert not store.set_session_status("ffffffffff", SessionStatus.pending, expected=created)

    pending = {SessionStatus.pending}
    assert store.set_session_status(sid, SessionStatus.running, expected=pending)
    running = store.get_session(sid)
    assert running is not None and running.started_at is not None and running.ended_at is None

    ended = store.set_session_status(
        sid, SessionStatus.failed, expected=ACTIVE_STATUSES, failure_reason="boom"
    )
    assert ended
    # a cancel that loses the race to the end changes nothing
    lost = store.set_session_status(
        sid, SessionStatus.canceled, expected=ACTIVE_STATUSES, failure_reason="late"
    )
    assert not lost
    final = store.get_session(sid)
    assert final is not None and final.status is SessionStatus.failed
    assert final.failure_reason == "boom" and final.ended_at is not None


def test_the_round_is_recorded_on_the_session(store: StateStore) -> None:
    sid = new_session(store)
    store.set_session_round(sid, 2)
    session = store.get_session(sid)
    assert session is not None and session.round == 2


def test_deleting_a_session_deletes_what_belongs_to_it(store: StateStore) -> None:
    sid = new_session(store)
    other = new_session(store, "bbbbbbbbbb")
    pid = join(store, sid, "silo-a")
    kept = join(store, other, "silo-a")
    store.add_tasks([queued(sid, pid, "t1"), queued(other, kept, "t2")])
    store.record_round(sid, 1, {"loss": 1.0}, {"silo-a": {"loss": 1.0}})
    store.save_model(sid, 1, f"sessions/{sid}/model.safetensors", {})
    store.append_log(sid, "hello")

    assert store.delete_session(sid)
    assert not store.delete_session(sid)
    assert store.get_session(sid) is None and store.get_participant(pid) is None
    assert store.list_participants(sid) == [] and store.find_participant(sid, "silo-a") is None
    assert store.get_task("t1") is None and store.list_rounds(sid) == []
    assert store.get_model(sid) is None and store.list_logs(sid) == []
    # the other session keeps its participant under the same name, and its task
    assert store.find_participant(other, "silo-a") is not None
    assert store.get_task("t2") is not None


# ------------------------------------------------------------------ participants


def test_participants_join_in_order_with_their_keys(store: StateStore) -> None:
    sid = new_session(store)
    first = join(store, sid, "silo-a")
    second = join(store, sid, "silo-b")
    listed = store.list_participants(sid)
    assert [(p.id, p.seq) for p in listed] == [(first, 0), (second, 1)]
    record = store.get_participant(first)
    assert record is not None and record.dataset == DATASET
    assert (record.credential_hash, record.public_key) == ("hash-silo-a", KEY)
    assert record.last_seen_at == record.joined_at
    found = store.find_participant(sid, "silo-b")
    assert found is not None and found.id == second
    assert store.get_participant("nobody") is None


def test_joining_under_a_taken_name_returns_the_participant_unchanged(store: StateStore) -> None:
    sid = new_session(store)
    pid = join(store, sid, "silo-a")
    again, created = store.join_participant(
        sid, "silo-a", {"train_rows": 99}, credential_hash="other", public_key="B" * 43
    )
    assert not created and again.id == pid
    assert (again.dataset, again.credential_hash, again.public_key) == (DATASET, "hash-silo-a", KEY)
    assert len(store.list_participants(sid)) == 1


def test_joining_an_unknown_session_is_a_value_error(store: StateStore) -> None:
    with pytest.raises(ValueError, match="session ffffffffff not found"):
        store.join_participant("ffffffffff", "a", DATASET, credential_hash="h", public_key=KEY)


def test_a_rejoin_updates_only_what_it_is_given(store: StateStore) -> None:
    sid = new_session(store)
    pid = join(store, sid, "silo-a")
    later = utcnow() + timedelta(seconds=5)
    updated = store.rejoin_participant(pid, public_key="B" * 43, at=later)
    assert updated is not None and updated.public_key == "B" * 43
    assert updated.dataset == DATASET and updated.credential_hash == "hash-silo-a"
    assert updated.last_seen_at == later
    moved = store.rejoin_participant(pid, dataset={"train_rows": 7}, credential_hash="new")
    assert moved is not None and (moved.dataset, moved.credential_hash) == (
        {"train_rows": 7},
        "new",
    )
    assert store.rejoin_participant("nobody") is None


def test_last_seen_is_written_for_a_batch_of_participants(store: StateStore) -> None:
    sid = new_session(store)
    first, second = join(store, sid, "silo-a"), join(store, sid, "silo-b")
    joined = store.get_participant(second)
    assert joined is not None and joined.last_seen_at is not None
    later = joined.last_seen_at + timedelta(seconds=11)
    assert store.touch_participants([first, "nobody"], at=later) == 1
    touched, untouched = store.get_participant(first), store.get_participant(second)
    assert touched is not None and touched.last_seen_at == later
    assert untouched is not None and untouched.last_seen_at == joined.last_seen_at
    assert store.touch_participants([]) == 0
    many = [join(store, sid, f"silo-{i}") for i in range(600)]  # more than one IN list
    assert store.touch_participants(many, at=later) == 600


def test_concurrent_joins_get_distinct_places_and_one_wins_a_name(store: StateStore) -> None:
    if isinstance(store, SqlStore) and not store.url.startswith("sqlite"):
        pytest.skip("join order under concurrency is serialised by SQLite and the memory lock")
    sid = new_session(store)
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def run(name: str) -> None:
        participant, created = store.join_participant(
            sid, name, DATASET, credential_hash="h", public_key=KEY
        )
        with lock:
            results.append((participant.id, created))

    names = [f"silo-{i}" for i in range(6)] + ["silo-0"] * 4
    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.seq for p in store.list_participants(sid)) == list(range(6))
    assert sum(created for _, created in results) == 6


# ------------------------------------------------------------------------- tasks


def test_tasks_are_queued_completed_and_failed(store: StateStore) -> None:
    sid = new_session(store)
    a, b = join(store, sid, "silo-a"), join(store, sid, "silo-b")
    store.add_tasks([queued(sid, a, "ta"), queued(sid, b, "tb"), queued(sid, a, "tc")])
    assert {t.id for t in store.list_tasks(sid)} == {"ta", "tb", "tc"}
    task = store.get_task("ta")
    assert task is not None and task.status is TaskStatus.queued and task.meta == {"round": 1}

    delivered, replied = utcnow(), utcnow() + timedelta(milliseconds=5)
    store.complete_tasks(
        [
            TaskCompletion("ta", {"num_examples": 5}, delivered_at=delivered, replied_at=replied),
            TaskCompletion("tb", {"num_examples": 6}, replied_at=replied),
        ]
    )
    store.fail_task("tc", "client reported an error: x", reply_meta={"why": "x"})
    done = store.get_task("ta")
    assert done is not None and done.status is TaskStatus.done
    assert done.reply_meta == {"num_examples": 5}
    assert (done.delivered_at, done.replied_at) == (delivered, replied)
    failed = store.get_task("tc")
    assert failed is not None and failed.status is TaskStatus.failed
    assert failed.error == "client reported an error: x" and failed.reply_meta == {"why": "x"}
    assert failed.replied_at is not None
    assert store.get_task("nope") is None


def test_adding_tasks_is_all_or_nothing(store: StateStore) -> None:
    sid = new_session(store)
    a = join(store, sid, "silo-a")
    with pytest.raises(ValueError, match="Cannot add tasks"):
        store.add_tasks([queued(sid, a, "ok"), queued(sid, "nobody", "bad")])
    assert store.list_tasks(sid) == []
    store.add_tasks([])  # nothing to do is not an error


def test_a_restart_makes_queued_tasks_of_active_sessions_stale(store: StateStore) -> None:
    sid, other = new_session(store), new_session(store, "bbbbbbbbbb")
    a, b = join(store, sid, "silo-a"), join(store, other, "silo-a")
    store.add_tasks([queued(sid, a, "t1"), queued(sid, a, "t2"), queued(other, b, "t3")])
    store.complete_tasks([TaskCompletion("t1", {})])
    assert store.mark_stale_tasks([sid], "server restarted") == 1
    assert store.mark_stale_tasks([], "server restarted") == 0
    stale = store.get_task("t2")
    assert stale is not None and (stale.status, stale.error) == (
        TaskStatus.stale,
        "server restarted",
    )
    untouched = [store.get_task("t1"), store.get_task("t3")]
    assert [t.status for t in untouched if t] == [TaskStatus.done, TaskStatus.queued]


# ------------------------------------------------------------- rounds, models, logs


def test_a_redone_round_replaces_its_record(store: StateStore) -> None:
    sid = new_session(store)
    store.record_round(sid, 2, {"loss": 2.0}, {"silo-a": {"loss": 2.0}})
    store.record_round(sid, 1, {"loss": 1.0}, {})
    store.record_round(sid, 2, {"loss": 0.5}, {"silo-a": {"loss": 0.5, "auc": 0.9}})
    rounds = store.list_rounds(sid)
    assert [(r.round, r.federated) for r in rounds] == [(1, {"loss": 1.0}), (2, {"loss": 0.5})]
    assert rounds[1].per_client == {"silo-a": {"loss": 0.5, "auc": 0.9}}
    session = store.get_session(sid)
    assert session is not None and session.round == 2
    with pytest.raises(ValueError, match="session ffffffffff not found"):
        store.record_round("ffffffffff", 1, {}, {})


def test_the_model_record_is_replaced_by_a_later_save(store: StateStore) -> None:
    sid = new_session(store)
    assert store.get_model(sid) is None
    store.save_model(sid, 1, "sessions/x/model.safetensors", {"best": 1})
    store.save_model(sid, 3, "sessions/x/model.safetensors", {"best": 3})
    model = store.get_model(sid)
    assert model is not None and (model.round, model.meta) == (3, {"best": 3})
    assert model.key == "sessions/x/model.safetensors"
    with pytest.raises(ValueError, match="session ffffffffff not found"):
        store.save_model("ffffffffff", 1, "k", {})


def test_log_lines_come_back_in_order(store: StateStore) -> None:
    sid = new_session(store)
    for i in range(5):
        store.append_log(sid, f"line {i}")
    store.append_log("ffffffffff", "dropped")  # a session deleted under a late line
    assert [line.message for line in store.list_logs(sid)] == [f"line {i}" for i in range(5)]
    assert store.list_logs("ffffffffff") == []


def test_returned_records_are_copies(store: StateStore) -> None:
    sid = new_session(store)
    pid = join(store, sid, "silo-a")
    session = store.get_session(sid)
    participant = store.get_participant(pid)
    assert session is not None and participant is not None
    session.model_config["payload_size"] = 99
    participant.dataset["train_rows"] = 99
    again = store.get_session(sid)
    assert again is not None and again.model_config == {"payload_size": 4}
    assert store.list_participants(sid)[0].dataset == DATASET


def test_completing_an_unknown_task_changes_nothing(store: StateStore) -> None:
    sid = new_session(store)
    a = join(store, sid, "silo-a")
    store.add_tasks([queued(sid, a, "ta")])
    store.complete_tasks([TaskCompletion("gone", {}), TaskCompletion("ta", {"n": 1})])
    done = store.get_task("ta")
    assert done is not None and done.status is TaskStatus.done
    assert store.get_task("gone") is None


# ----------------------------------------------------------------------- batches


def test_a_batch_of_writes_lands_together(store: StateStore) -> None:
    sid = new_session(store)
    a = join(store, sid, "silo-a")
    store.add_tasks([queued(sid, a, "t1")])
    now = utcnow()
    writes = SessionWrites(
        sid,
        completions=[TaskCompletion("t1", {"num_examples": 5}, replied_at=now)],
        tasks=[queued(sid, a, "t2")],
        rounds=[RoundRecord(sid, 1, {"loss": 1.0}, {"silo-a": {"loss": 1.0}}, now)],
        session_round=3,
        model=ModelRecord(sid, 3, f"sessions/{sid}/model.safetensors", {"best": 1}, now),
        logs=["round 1 done", "model saved"],
    )
    assert writes and not SessionWrites(sid)
    store.apply(writes)
    store.apply(SessionWrites(sid))  # nothing to write is not an error
    done, new = store.get_task("t1"), store.get_task("t2")
    assert done is not None and done.status is TaskStatus.done
    assert new is not None and new.status is TaskStatus.queued
    assert [r.federated for r in store.list_rounds(sid)] == [{"loss": 1.0}]
    session = store.get_session(sid)
    assert session is not None and session.round == 3  # the larger of round and checkpoint
    model = store.get_model(sid)
    assert model is not None and model.meta == {"best": 1}
    assert [line.message for line in store.list_logs(sid)] == ["round 1 done", "model saved"]


def test_a_batch_completes_a_task_it_inserts(store: StateStore) -> None:
    # The engine's writer may insert a send's tasks after replies to them arrived.
    sid = new_session(store)
    a = join(store, sid, "silo-a")
    store.apply(
        SessionWrites(
            sid, tasks=[queued(sid, a, "t1")], completions=[TaskCompletion("t1", {"n": 2})]
        )
    )
    task = store.get_task("t1")
    assert task is not None and (task.status, task.reply_meta) == (TaskStatus.done, {"n": 2})


def test_a_batch_that_cannot_land_writes_nothing(store: StateStore) -> None:
    sid = new_session(store)
    a = join(store, sid, "silo-a")
    store.add_tasks([queued(sid, a, "t1")])
    bad = SessionWrites(
        sid,
        completions=[TaskCompletion("t1", {})],
        tasks=[queued(sid, "nobody", "t2")],
        logs=["never"],
    )
    with pytest.raises(ValueError, match="Cannot add tasks"):
        store.apply(bad)
    task = store.get_task("t1")
    assert task is not None and task.status is TaskStatus.queued
    assert store.list_logs(sid) == []
    with pytest.raises(ValueError, match="session ffffffffff not found"):
        store.apply(SessionWrites("ffffffffff", logs=["x"]))


# ------------------------------------------------------------------------ tokens


def token(token_id: str, token_hash: str, **fields: object) -> TokenRecord:
    record = TokenRecord(
        id=token_id, name=token_id, token_hash=token_hash, created_at=utcnow(), scopes=("admin",)
    )
    return replace(record, **fields)  # type: ignore[arg-type]


def test_tokens_are_found_by_hash_listed_revoked_and_touched(store: StateStore) -> None:
    assert store.count_tokens() == 0
    now = utcnow()
    store.add_token(token("old", "h1", created_at=now - timedelta(days=1)))
    store.add_token(token("new", "h2", created_at=now, expires_at=now + timedelta(days=90)))
    with pytest.raises(ValueError, match="already stored"):
        store.add_token(token("dup", "h1"))
    assert store.count_tokens() == 2
    assert [t.id for t in store.list_tokens()] == ["old", "new"]
    found = store.get_token_by_hash("h2")
    assert found is not None and found.scopes == ("admin",) and found.expires_at is not None
    assert store.get_token_by_hash("nope") is None

    revoked = store.revoke_token("old", at=now)
    assert revoked is not None and revoked.revoked_at == now
    again = store.revoke_token("old", at=now + timedelta(hours=1))
    assert again is not None and again.revoked_at == now  # the first revocation stands
    assert store.revoke_token("nope") is None

    store.touch_token("new", at=now)
    touched = store.get_token_by_hash("h2")
    assert touched is not None and touched.last_used_at == now


# ------------------------------------------------------------------ SQL specifics


def test_sqlite_runs_in_wal_mode_and_persists_across_opens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = SqlStore(url)
    with first.database.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    assert (mode, keys) == ("wal", 1)
    new_session(first)
    first.close()
    second = SqlStore(url)
    assert second.get_session("0123456789") is not None
    second.close()


def test_open_store_picks_the_implementation_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    sql = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(sql, SqlStore)
    sql.close()
