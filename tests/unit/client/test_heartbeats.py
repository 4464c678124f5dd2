"""Heartbeats while a task runs: on time while armed, none for short tasks, no wake-ups."""

from __future__ import annotations

import threading
import time

from fedsilo.client.connection import _Heartbeats


class Beats:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.times.append(time.monotonic())


def test_an_armed_task_beats_every_interval_until_disarmed() -> None:
    beats = Beats()
    heartbeats = _Heartbeats(beats)
    started = time.monotonic()
    heartbeats.arm(0.05)
    time.sleep(0.33)
    heartbeats.disarm()
    stopped = time.monotonic()
    time.sleep(0.15)
    assert 3 <= len(beats.times) <= 7
    assert beats.times[0] - started >= 0.045
    gaps = [b - a for a, b in zip(beats.times, beats.times[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps)
    assert all(t <= stopped + 0.01 for t in beats.times)  # none after the disarm


def test_tasks_shorter_than_the_interval_cost_no_beat() -> None:
    beats = Beats()
    heartbeats = _Heartbeats(beats)
    for _ in range(200):
        heartbeats.arm(0.05)
        time.sleep(0.001)
        heartbeats.disarm()
    time.sleep(0.12)
    assert beats.times == []


def test_a_task_armed_after_an_idle_spell_gets_its_first_beat_on_time() -> None:
    beats = Beats()
    heartbeats = _Heartbeats(beats)
    heartbeats.arm(0.05)
    heartbeats.disarm()
    time.sleep(0.17)  # the thread sleeps disarmed, without being woken by the next arm
    armed = time.monotonic()
    heartbeats.arm(0.05)
    time.sleep(0.09)
    heartbeats.disarm()
    assert len(beats.times) == 1
    assert 0.045 <= beats.times[0] - armed <= 0.085


def test_a_shorter_interval_wakes_the_sleeping_thread() -> None:
    beats = Beats()
    heartbeats = _Heartbeats(beats)
    heartbeats.arm(5.0)
    heartbeats.disarm()
    time.sleep(0.02)
    armed = time.monotonic()
    heartbeats.arm(0.05)
    time.sleep(0.08)
    heartbeats.disarm()
    assert len(beats.times) == 1
    assert beats.times[0] - armed < 0.075
