"""The in-process runner is the engine over a memory store, with its executors as participants.

Checked through what the engine recorded in the session's store: who joined (with a hashed
credential and a public key), each task's fate, the log; and through what a workflow sees:
reply screening, failures, a restart from a state directory, the context's threads released.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.client.keys import encode_public_key
from fedsilo.federation import Failure, Reply, Task
from fedsilo.federation.expect import Count, ReplySpec
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.server.auth import TOKEN_PREFIX
from fedsilo.server.engine.context import EngineContext
from fedsilo.server.state.records import TaskStatus
from fedsilo.wire import Arrays, DatasetSummary


class Counter:
    """Answers ``fit`` with twice the broadcast and a claimed row count; counts its calls."""

    def __init__(self, rows: int = 5, fails: bool = False) -> None:
        self.rows = rows
        self.fails = fails
        self.calls = 0

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        self.calls += 1
        if self.fails:
            raise RuntimeError("disk full")
        return {"num_examples": self.rows}, {"w": 2 * arrays["w"]}


def fit(ctx: InProcessContext, expect: ReplySpec | None = None) -> list[Any]:
    tasks = [
        Task(to=p, kind="fit", round=1, arrays={"w": np.ones(3)}, expect=expect)
        for p in ctx.participants()
    ]
    return list(ctx.send(tasks).outcomes())


def test_it_is_the_engine_context_and_its_participants_joined_as_clients_join() -> None:
    ctx = InProcessContext({"a": Counter(), "b": Counter()}, 1)
    assert isinstance(ctx, EngineContext)
    records = ctx.store.list_participants(ctx.session.id)
    assert [r.client_name for r in records] == ["a", "b"]
    for record in records:
        # A credential is issued and only its hash stored; the key is the client's own.
        assert len(record.credential_hash) == 64 and not record.credential_hash.startswith(
            TOKEN_PREFIX
        )
        assert record.public_key == encode_public_key(ctx.keys[record.client_name].public_bytes)
    assert [p.public_key for p in ctx.joined] == [ctx.keys[n].public_bytes for n in "ab"]
    messages = [line.message for line in ctx.store.list_logs(ctx.session.id)]
    assert messages == ["client 'a' joined (0 rows)", "client 'b' joined (0 rows)"]
    assert ctx.logs == []  # the engine's own lines are not the workflow's


def test_tasks_go_through_the_hub_and_are_recorded_in_the_store() -> None:
    ctx = InProcessContext({"a": Counter(), "b": Counter()}, 1)
    replies = fit(ctx)
    assert sorted(r.participant.client_name for r in replies) == ["a", "b"]
    np.testing.assert_array_equal(replies[0].arrays["w"], [2.0, 2.0, 2.0])
    ctx.flush()
    tasks = ctx.store.list_tasks(ctx.session.id)
    assert [(t.kind, t.status) for t in tasks] == [("fit", TaskStatus.done)] * 2
    assert all(t.delivered_at is not None and t.reply_meta == {"num_examples": 5} for t in tasks)
    assert ctx.tasks["fit"] == 2 and ctx.bytes["fit"] > 0


def test_counts_are_bounded_by_declared_rows_only() -> None:
    declared = {"a": DatasetSummary(train_rows=3, test_rows=0, columns=[])}
    ctx = InProcessContext({"a": Counter(rows=5), "b": Counter(rows=5)}, 1, datasets=declared)
    spec = ReplySpec(counts={"num_examples": Count("train_rows")})
    outcomes = {o.participant.client_name: o for o in fit(ctx, expect=spec)}
    assert isinstance(outcomes["a"], Failure) and outcomes["a"].cause == "malformed"
    assert isinstance(outcomes["b"], Reply)  # b declared nothing: no bound
    ctx.flush()
    statuses = {t.participant_id: t.status for t in ctx.store.list_tasks(ctx.session.id)}
    assert sorted(statuses.values()) == [TaskStatus.done, TaskStatus.failed]
    assert len(ctx.logs) == 1 and "num_examples" in ctx.logs[0]


def test_an_executor_error_is_a_recorded_failure_or_raised() -> None:
    ctx = InProcessContext({"a": Counter(fails=True)}, 1, capture_failures=True)
    [outcome] = fit(ctx)
    assert isinstance(outcome, Failure) and outcome.reason == "disk full"
    ctx.flush()
    [task] = ctx.store.list_tasks(ctx.session.id)
    assert task.status == TaskStatus.failed and task.error == "disk full"
    with pytest.raises(RuntimeError, match="disk full"):
        fit(InProcessContext({"a": Counter(fails=True)}, 1))


def test_a_restarted_context_replays_from_its_state_dir(tmp_path: Path) -> None:
    first = Counter()
    fit(InProcessContext({"a": first}, 1, state_dir=tmp_path))
    again = Counter()
    restarted = InProcessContext({"a": again}, 1, state_dir=tmp_path)
    [reply] = fit(restarted)
    assert isinstance(reply, Reply)
    assert (first.calls, again.calls) == (1, 0)
    assert restarted.replayed == [("a", "fit", 1)]
    # Same session, same client name: the same participant id, as after a server restart.
    assert restarted.joined[0].id == InProcessContext({"a": Counter()}, 1).joined[0].id


def test_checkpoints_rounds_and_the_model_are_read_from_the_store() -> None:
    ctx = InProcessContext({"a": Counter()}, 2, stop_after=2)
    ctx.record_round(1, {"loss": 1.0}, {"a": {"loss": 1.0}})
    ctx.checkpoint(1, {"w": np.zeros(2)}, {"best": 1})
    ctx.save_model({"w": np.ones(2)}, {"note": "x"}, 1)
    assert ctx.rounds == {1: ({"loss": 1.0}, {"a": {"loss": 1.0}})}
    assert list(ctx.checkpoints) == [1] and ctx.checkpoints[1].meta == {"best": 1}
    assert ctx.saved is not None and ctx.saved[1:] == ({"note": "x"}, 1)
    np.testing.assert_array_equal(ctx.saved[0]["w"], [1.0, 1.0])
    [model] = [ctx.store.get_model(ctx.session.id)]
    assert model is not None and model.round == 1
    with pytest.raises(Exception, match="round 2"):
        ctx.checkpoint(2, {"w": np.zeros(2)}, {})
    resumed = InProcessContext({"a": Counter()}, 2, checkpoint=ctx.last_checkpoint)
    restored = resumed.restore()
    assert restored is not None and restored.round == 2
    assert resumed.checkpoints == {} and resumed.logs == []


def test_a_dropped_context_is_collected_and_stops_its_threads() -> None:
    ctx = InProcessContext({"a": Counter()}, 1)
    fit(ctx)
    ctx.checkpoint(1, {"w": np.zeros(2)}, {})
    ctx.flush()  # the writer ran its last job, a closure over ctx, and waits for the next
    # this context's writer (the suite's other contexts may still have theirs, same name)
    writer = ctx.writes._thread
    alive = weakref.ref(ctx)
    del ctx
    gc.collect()
    assert alive() is None  # no thread keeps it (its checkpoints) alive
    writer.join(timeout=5)
    assert not writer.is_alive()
