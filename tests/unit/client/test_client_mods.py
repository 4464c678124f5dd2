"""Client middleware: the chain's order, release-once, the accounting hook."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from fedsilo.client.mods import (
    Handler,
    Mod,
    TaskReply,
    TaskRequest,
    accounting,
    chain,
    release_once,
)
from fedsilo.client.replies import ReplyStore

SID = "0123456789"


def request(task_id: str = "t1", round: int = 1) -> TaskRequest:
    return TaskRequest(
        id=task_id, kind="fit", round=round, meta={"lr": 0.1}, arrays={"w": np.ones(3)}
    )


def noisy(task: TaskRequest) -> TaskReply:
    """Stands for a DP release: every computation differs."""
    return TaskReply(status="ok", meta={"noise": secrets.token_hex(8)}, arrays=task.arrays)


def test_mods_wrap_outermost_first() -> None:
    order: list[str] = []

    def named(name: str) -> Mod:
        def mod(task: TaskRequest, call_next: Handler) -> TaskReply:
            order.append(f"{name} in")
            reply = call_next(task)
            order.append(f"{name} out")
            return reply

        return mod

    def handler(task: TaskRequest) -> TaskReply:
        order.append("executor")
        return TaskReply(status="ok")

    chain([named("a"), named("b")], handler)(request())
    assert order == ["a in", "b in", "executor", "b out", "a out"]


def test_release_once_replays_identical_bytes_after_a_restart(tmp_path: Path) -> None:
    released: list[str] = []
    mods = [
        release_once(ReplyStore(tmp_path, SID, "silo-a")),
        accounting(lambda task, reply: released.append(task.id)),
    ]
    first = chain(mods, noisy)(request("t1")).frame()
    # a restarted client: new store object, same directory; the server re-asks under a new id
    restarted = [
        release_once(ReplyStore(tmp_path, SID, "silo-a")),
        accounting(lambda task, reply: released.append(task.id)),
    ]
    again = chain(restarted, noisy)(request("t7"))
    assert again.replayed and again.frame() == first
    assert released == ["t1"]
    # another question is computed afresh
    other = chain(restarted, noisy)(request("t8", round=2))
    assert not other.replayed and other.frame() != first
    assert released == ["t1", "t8"]


def test_errors_are_neither_stored_nor_counted(tmp_path: Path) -> None:
    released: list[str] = []
    store = ReplyStore(tmp_path, SID, "silo-a")
    mods = [release_once(store), accounting(lambda task, reply: released.append(task.id))]
    reply = chain(mods, lambda task: TaskReply.failed("boom"))(request())
    assert reply.status == "error" and released == []
    assert not store.folder.exists()


def test_the_secure_mod_answers_eda_sums_only_masked() -> None:
    """A server that asks an eda secure-sum kind without the round's survivors would get one
    silo's statistics in clear: the mod refuses before the executor runs."""
    from fedsilo.client.secure import MASKED_ONLY, secure_aggregation

    ran: list[str] = []

    def executor(task: TaskRequest) -> TaskReply:
        ran.append(task.kind)
        return TaskReply(status="ok", arrays={"sketch": np.ones(3)})

    handle = chain([secure_aggregation(None)], executor)
    for kind in sorted(MASKED_ONLY):
        task = TaskRequest(id="t1", kind=kind, round=1, meta={"columns": ["x"]}, arrays={})
        reply = handle(task)
        assert reply.status == "error" and "answered only masked" in (reply.error or "")
    assert ran == []
    # Any other kind passes through as before (a plain session's fit).
    assert handle(request()).status == "ok" and ran == ["fit"]
