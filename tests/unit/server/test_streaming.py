"""``send`` and its TaskGroup in the real engine, over real HTTP: a broadcast held once,
replies streamed in arrival order, early ``wait``, structured failures, and the reply gate
that keeps the server from holding more than two large updates at a time."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.federation import Failure, Reply, Task
from fedsilo.server.engine.gate import SMALL_REPLY_BYTES
from fedsilo.server.engine.runner import REPLIES_IN_FLIGHT


def start(api: httpx.Client, silos: Any, helpers: Any, names: list[str]) -> tuple[str, list[Any]]:
    sid = helpers.create_session(api, package="probe", clients=len(names))
    members = [silos(sid, name) for name in names]
    for silo in members:
        assert silo.join().status_code == 201
    return sid, members


def test_a_broadcast_is_encoded_and_held_once(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    # 2.4 MB: larger than one piece, so the frame is also streamed out in pieces
    weights = {"w": np.arange(600_000, dtype=np.float32)}

    def workflow(ctx: Any) -> None:
        clients = ctx.wait_for_clients(3)
        tasks = [Task(to=c, kind="fit", arrays=weights, meta={"lr": 0.1}, round=1) for c in clients]
        group = ctx.send(tasks)
        probe.seen["replies"] = [r.participant.client_name for r in group.as_completed()]

    probe.workflow = workflow
    sid, members = start(api, silos, helpers, ["a", "b", "c"])
    hub = thread_server.app_state.engine.hub
    helpers.wait_until(lambda: hub.in_flight(sid) == 3, what="three tasks in flight")
    frames = hub.frames(sid)
    assert len(frames) == 1  # one frame for the three tasks
    assert weights["w"].nbytes < len(frames[0]) < weights["w"].nbytes + 1024

    received = [helpers.task_of(silo.next()) for silo in members]
    assert len({task_id for task_id, _, _ in received}) == 3  # one task each
    for _, arrays, header in received:
        np.testing.assert_array_equal(arrays["w"], weights["w"])
        assert (header.kind, header.round, header.meta) == ("fit", 1, {"lr": 0.1})
    for silo, (task_id, _, _) in zip(members, received, strict=True):
        assert silo.reply(task_id, meta={"num_examples": 1}).status_code == 200
    assert probe.done.wait(10)
    assert sorted(probe.seen["replies"]) == ["a", "b", "c"]
    assert hub.frames(sid) == []  # the frame went with the last task


def test_as_completed_yields_replies_in_arrival_order(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    order: list[str] = []

    def workflow(ctx: Any) -> None:
        clients = ctx.wait_for_clients(3)
        group = ctx.send([Task(to=c, kind="fit", round=1) for c in clients])
        for reply in group.as_completed():
            assert isinstance(reply, Reply) and (reply.kind, reply.round) == ("fit", 1)
            order.append(reply.participant.client_name)

    probe.workflow = workflow
    _, members = start(api, silos, helpers, ["a", "b", "c"])
    tasks = {silo.name: helpers.task_of(silo.next())[0] for silo in members}
    by_name = {silo.name: silo for silo in members}
    for count, name in enumerate(["c", "a", "b"], start=1):
        assert by_name[name].reply(tasks[name], meta={"n": count}).status_code == 200
        # the workflow has this reply before the next one is even sent
        helpers.wait_until(lambda count=count: len(order) == count, what=f"{count} replies")
    assert probe.done.wait(10)
    assert order == ["c", "a", "b"]


def test_wait_returns_at_min_replies_and_cancel_withdraws_the_rest(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    proceed = threading.Event()

    def workflow(ctx: Any) -> None:
        clients = ctx.wait_for_clients(3)
        group = ctx.send([Task(to=c, kind="fit") for c in clients], timeout=30)
        replies = group.wait(min_replies=2)
        probe.seen["early"] = sorted(r.participant.client_name for r in replies)
        probe.seen["outstanding"] = group.outstanding
        proceed.wait(10)
        group.cancel()
        probe.seen["failures"] = group.failures

    probe.workflow = workflow
    _, members = start(api, silos, helpers, ["a", "b", "slow"])
    tasks = [helpers.task_of(silo.next())[0] for silo in members]
    for silo, task_id in zip(members[:2], tasks[:2], strict=True):
        silo.reply(task_id)
    helpers.wait_until(lambda: "early" in probe.seen, what="wait(min_replies=2) to return")
    assert probe.seen["early"] == ["a", "b"]
    assert probe.seen["outstanding"] == 1
    proceed.set()
    assert probe.done.wait(10)
    [failure] = probe.seen["failures"]
    assert (failure.participant.client_name, failure.cause) == ("slow", "canceled")
    late = members[2].reply(tasks[2])
    assert late.status_code == 409
    assert late.json()["detail"] == f"Task {tasks[2]} is no longer awaited (it is failed)."


def test_failures_come_back_as_structured_values(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    def workflow(ctx: Any) -> None:
        clients = ctx.wait_for_clients(4)
        group = ctx.send([Task(to=c, kind="fit", round=7) for c in clients], timeout=1.5)
        probe.seen["outcomes"] = list(group.outcomes())
        with pytest.raises(TaskError, match="got 0 successful replies; at least 1 needed"):
            ctx.send([Task(to=clients[0], kind="fit")], timeout=0.2).wait()

    probe.workflow = workflow
    _, members = start(api, silos, helpers, ["ok", "sad", "garbled", "silent"])
    ok, sad, garbled, silent = members
    tasks = {silo.name: helpers.task_of(silo.next())[0] for silo in members}
    ok.reply(tasks["ok"], meta={"fine": True})
    sad.reply(tasks["sad"], status="error", error="disk full")
    assert garbled.reply(tasks["garbled"], body=b"garbage").status_code == 422
    assert probe.done.wait(15)
    outcomes = {o.participant.client_name: o for o in probe.seen["outcomes"]}
    assert isinstance(outcomes["ok"], Reply) and outcomes["ok"].meta == {"fine": True}
    failures = {name: o for name, o in outcomes.items() if isinstance(o, Failure)}
    assert {name: f.cause for name, f in failures.items()} == {
        "sad": "error",
        "garbled": "malformed",
        "silent": "timeout",
    }
    assert all((f.kind, f.round) == ("fit", 7) for f in failures.values())
    assert failures["sad"].reason == "client reported an error: disk full"
    assert failures["silent"].reason == "no reply within 1.5 s"
    late = silent.reply(tasks["silent"])
    assert late.status_code == 409


def test_the_gate_admits_large_replies_only_as_the_workflow_consumes_them(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    size = SMALL_REPLY_BYTES // 2  # float32 count of a 2 MiB update
    consume = threading.Event()
    totals: list[float] = []

    def workflow(ctx: Any) -> None:
        clients = ctx.wait_for_clients(4)
        group = ctx.send([Task(to=c, kind="fit") for c in clients])
        consume.wait(20)
        for reply in group.as_completed():
            update = reply.arrays["u"]
            # a read-only view over the request body: decoded without a copy
            assert not update.flags.writeable and not update.flags.owndata
            totals.append(float(update.sum()))

    probe.workflow = workflow
    sid, members = start(api, silos, helpers, ["a", "b", "c", "d"])
    tasks = [helpers.task_of(silo.next())[0] for silo in members]
    answers: dict[str, int] = {}

    def post(silo: Any, task_id: str, value: float) -> None:
        update = np.full(size, value, dtype=np.float32)
        answers[silo.name] = silo.reply(task_id, {"u": update}).status_code

    threads = [
        threading.Thread(target=post, args=(silo, task_id, float(i + 1)))
        for i, (silo, task_id) in enumerate(zip(members, tasks, strict=True))
    ]
    for thread in threads:
        thread.start()
    gate = thread_server.app_state.engine.gate(sid)
    helpers.wait_until(
        lambda: gate.in_use == REPLIES_IN_FLIGHT and gate.waiting == 4 - REPLIES_IN_FLIGHT,
        what="the gate full and the other replies waiting",
    )
    # only the admitted ones are read and acknowledged; the others wait, unread
    helpers.wait_until(lambda: len(answers) == REPLIES_IN_FLIGHT, what="admitted replies read")
    assert gate.waiting == 4 - REPLIES_IN_FLIGHT
    consume.set()
    for thread in threads:
        thread.join(timeout=20)
    assert probe.done.wait(10)
    assert answers == {"a": 200, "b": 200, "c": 200, "d": 200}
    assert sorted(totals) == [float(v * size) for v in (1, 2, 3, 4)]
    assert gate.in_use == 0
