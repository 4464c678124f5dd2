"""The reply gate on its own: a waiting reply keeps its participant alive, keeps its place,
and a canceled waiter passes a slot it was given on."""

from __future__ import annotations

import asyncio

import pytest

from fedsilo.server.engine import gate as gate_module
from fedsilo.server.engine.gate import SMALL_REPLY_BYTES, ReplyGate

LARGE = SMALL_REPLY_BYTES


def test_a_waiting_reply_calls_keepalive_until_it_gets_its_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate_module, "KEEPALIVE_S", 0.01)
    beats: list[float] = []

    async def scenario() -> None:
        gate = ReplyGate(1)
        first = await gate.acquire(LARGE)
        loop = asyncio.get_running_loop()
        second = asyncio.create_task(gate.acquire(LARGE, keepalive=lambda: beats.append(1.0)))
        third = asyncio.create_task(gate.acquire(LARGE))
        await asyncio.sleep(0.1)
        assert not second.done() and not third.done() and gate.waiting == 2
        first.release()
        slot = await asyncio.wait_for(second, 5)  # the oldest waiter, not the third
        assert not third.done()
        slot.release()
        (await asyncio.wait_for(third, 5)).release()
        assert gate.in_use == 0 and gate.waiting == 0
        assert loop.is_running()

    asyncio.run(scenario())
    assert len(beats) >= 3


def test_a_canceled_waiter_passes_its_slot_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_module, "KEEPALIVE_S", 0.01)

    async def scenario() -> None:
        gate = ReplyGate(1)
        first = await gate.acquire(LARGE)
        gone = asyncio.create_task(gate.acquire(LARGE, keepalive=lambda: None))
        after = asyncio.create_task(gate.acquire(LARGE))
        await asyncio.sleep(0.05)
        gone.cancel()  # the client hung up while waiting: its place is dropped
        await asyncio.sleep(0.05)
        first.release()
        (await asyncio.wait_for(after, 5)).release()
        assert gone.cancelled() and gate.in_use == 0

        # granted, then canceled before it ran: the slot goes to the next waiter
        held = await gate.acquire(LARGE)
        granted = asyncio.create_task(gate.acquire(LARGE))
        last = asyncio.create_task(gate.acquire(LARGE))
        await asyncio.sleep(0.05)
        held.release()
        granted.cancel()
        (await asyncio.wait_for(last, 5)).release()
        assert gate.in_use == 0

    asyncio.run(scenario())


def test_small_replies_are_not_gated() -> None:
    async def scenario() -> None:
        gate = ReplyGate(1)
        await gate.acquire(LARGE)
        slot = await asyncio.wait_for(gate.acquire(SMALL_REPLY_BYTES - 1), 1)
        slot.release()
        assert gate.in_use == 1

    asyncio.run(scenario())
