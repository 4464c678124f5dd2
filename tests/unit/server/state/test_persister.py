"""The session writer (:class:`~fedsilo.server.engine.persister.Persister`) over every store:
queued batches merge into one transaction, files keep their place around the commit, other
jobs keep their order, and a failure reaches every waiter of its transaction."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from fedsilo.server.engine.persister import Batch, Persister
from fedsilo.server.state import (
    RoundRecord,
    SessionRecord,
    SessionWrites,
    StateStore,
    TaskCompletion,
    TaskRecord,
    TaskStatus,
    utcnow,
)
from fedsilo.wire import SessionStatus


def new_session(store: StateStore) -> tuple[str, str]:
    """A session of the echo package with one participant: (session id, participant id)."""
    sid, now = "0123456789", utcnow()
    store.create_session(
        SessionRecord(
            sid, "w", "writer", "hfl", "echo", 1, 3, {}, {}, SessionStatus.running, now, now
        )
    )
    participant, _ = store.join_participant(
        sid, "a", {"train_rows": 1}, credential_hash="h", public_key="A" * 43
    )
    return sid, participant.id


def queued(sid: str, pid: str, task_id: str) -> TaskRecord:
    return TaskRecord(task_id, sid, pid, "fit", 1, {}, created_at=utcnow())


class Counting:
    """The store, with its ``apply`` calls counted (every other call passes through)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.applied: list[SessionWrites] = []

    def apply(self, writes: SessionWrites, **kwargs: Any) -> None:
        self.applied.append(writes)
        self.store.apply(writes, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def blocked(writer: Persister) -> threading.Event:
    """Hold the writer on a job until the returned event is set, so what is queued behind
    it is queued together."""
    release, started = threading.Event(), threading.Event()

    def hold(_state: StateStore) -> None:
        started.set()
        release.wait(10)

    writer.submit(hold)
    assert started.wait(10)
    return release


def a_round(session_id: str, number: int) -> RoundRecord:
    return RoundRecord(
        session_id, number, {"loss": 1.0 / number}, {}, utcnow() - timedelta(seconds=number)
    )


def test_batches_queued_together_are_one_transaction(store: StateStore) -> None:
    sid, pid = new_session(store)
    counting = Counting(store)
    writer = Persister(counting, sid)
    seen_at_file: list[int | None] = []
    try:
        release = blocked(writer)
        writer.submit(Batch(lambda: SessionWrites(sid, tasks=[queued(sid, pid, "t1")])))
        done = TaskCompletion("t1", {"n": 1}, None, utcnow())
        rounds = [a_round(sid, 1), a_round(sid, 2)]
        writer.submit(
            Batch(
                lambda: SessionWrites(sid, completions=[done], rounds=rounds, session_round=1),
                # a checkpoint's file: written once its round's records are committed
                after=lambda: seen_at_file.append(store.get_session(sid).round),  # type: ignore[union-attr]
            )
        )
        last = writer.submit(Batch(lambda: SessionWrites(sid, logs=["round 1 done"])))
        release.set()
        last.result(10)
    finally:
        writer.close()
    assert len(counting.applied) == 1
    assert seen_at_file == [2]
    task = store.get_task("t1")
    assert task is not None and task.status == TaskStatus.done and task.reply_meta == {"n": 1}
    # each round keeps the time it was recorded, not the one transaction's
    stored = store.list_rounds(sid)
    assert [(r.round, r.created_at) for r in stored] == [(r.round, r.created_at) for r in rounds]
    assert [log.message for log in store.list_logs(sid)] == ["round 1 done"]


def test_a_plain_job_between_batches_keeps_its_place(store: StateStore) -> None:
    sid, pid = new_session(store)
    counting = Counting(store)
    writer = Persister(counting, sid)
    try:
        release = blocked(writer)
        writer.submit(Batch(lambda: SessionWrites(sid, tasks=[queued(sid, pid, "t1")])))
        # a failure recorded after the insert it updates, before the next batch
        writer.submit(lambda state: state.fail_task("t1", "client offline"))
        last = writer.submit(
            Batch(lambda: SessionWrites(sid, tasks=[queued(sid, pid, "t2")], logs=["next"]))
        )
        release.set()
        last.result(10)
    finally:
        writer.close()
    assert len(counting.applied) == 2
    first = store.get_task("t1")
    assert first is not None and first.status == TaskStatus.failed
    assert first.error == "client offline"
    second = store.get_task("t2")
    assert second is not None and second.status == TaskStatus.queued


def test_a_failed_batch_fails_every_waiter_of_its_transaction(store: StateStore) -> None:
    sid, _ = new_session(store)
    writer = Persister(store, sid)
    wrote_file: list[bool] = []

    def broken() -> SessionWrites:
        raise OSError("disk full")

    try:
        release = blocked(writer)
        first = writer.submit(Batch(lambda: SessionWrites(sid, logs=["kept?"])))
        second = writer.submit(Batch(broken, after=lambda: wrote_file.append(True)))
        release.set()
        for done in (first, second):
            with pytest.raises(OSError, match="disk full"):
                done.result(10)
    finally:
        writer.close()
    assert isinstance(writer.error, OSError)
    assert not wrote_file  # nothing is written after a commit that did not happen
    assert store.list_logs(sid) == []


def test_merged_writes_keep_the_later_record_of_a_round() -> None:
    first = SessionWrites("s", rounds=[a_round("s", 1), a_round("s", 2)], session_round=2)
    later = a_round("s", 2)
    first.extend(SessionWrites("s", rounds=[later], session_round=1, logs=["x"]))
    assert [r.round for r in first.rounds] == [1, 2] and first.rounds[1] is later
    assert first.session_round == 2 and first.logs == ["x"]
    with pytest.raises(ValueError, match="session 't'"):
        first.extend(SessionWrites("t"))
