"""Which participants are alive: every poll is a heartbeat; the silent are marked offline.

A client shows it is alive by talking to the server: a long-poll (``tasks/next``, a reply
with ``?wait=S``, the relay's poll) or, while it works on a task, ``heartbeat`` calls (the
task frame's :data:`~fedsilo.wire.HEARTBEAT_HEADER` says how often). Each sign of life sets
the participant's deadline::

    deadline = the time it was heard + the wait it asked for + grace

A poll held open for ``wait`` seconds is no silence: the deadline runs from the end of its
wait. A participant past its deadline is *offline*: the engine fails its outstanding tasks at
once (cause ``"offline"``), sends it no new task until it is heard from again, and the session
log says so. Hearing from it again (a poll, a heartbeat, a rejoin) makes it live at once.

Bookkeeping only, in memory, one lock: :meth:`Liveness.seen` is on every poll's path and costs
a dictionary write. The sweep (the engine's thread, every :attr:`Liveness.sweep_interval`) finds
who went silent and who came back, and every :data:`SEEN_WRITE_INTERVAL` writes the
participants' ``last_seen_at`` in one statement. After a server restart nobody has been heard
yet: the engine gives the participants of resumed sessions one grace period to poll again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedsilo.server.state import utcnow

if TYPE_CHECKING:
    from fedsilo.server.engine.runner import SessionEngine

__all__ = ["SEEN_WRITE_INTERVAL", "Liveness", "LivenessSweep", "Silence"]

logger = logging.getLogger("fedsilo.engine")

#: seconds between two writes of the participants' ``last_seen_at`` (the sweep writes who was
#: heard from in one statement: a poll never writes to the database)
SEEN_WRITE_INTERVAL = 10.0


@dataclass(frozen=True)
class Silence:
    """A participant found past its deadline by a sweep."""

    participant_id: str
    session_id: str
    #: seconds since it was last heard from
    silent_for: float


@dataclass
class _Heard:
    session_id: str
    #: monotonic time it was last heard from
    at: float
    #: monotonic time after which it is offline
    deadline: float


class Liveness:
    """Deadlines of the participants heard from, and who is offline.

    Parameters
    ----------
    grace : float
        Seconds of silence allowed beyond the wait of a participant's last poll (and between
        two heartbeats while it works).
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._heard: dict[str, _Heard] = {}
        #: participant id -> session id, for those marked offline and not heard from since
        self._offline: dict[str, str] = {}
        #: offline participants heard from again, for the next sweep to report
        self._back: list[tuple[str, str]] = []

    @property
    def sweep_interval(self) -> float:
        """How often the engine sweeps: a quarter of the grace, at most 1 s, so a silent
        participant is noticed within grace + one sweep."""
        return min(1.0, self.grace / 4)

    @property
    def heartbeat_interval(self) -> float:
        """How often a working client should heartbeat: three beats per grace period, so one
        lost heartbeat does not make an honest client offline."""
        return self.grace / 3

    def seen(self, participant_id: str, session_id: str, wait: float = 0.0) -> None:
        """The participant was heard from now; ``wait``: the seconds its poll may stay open."""
        now = time.monotonic()
        with self._lock:
            self._heard[participant_id] = _Heard(session_id, now, now + wait + self.grace)
            if self._offline.pop(participant_id, None) is not None:
                self._back.append((participant_id, session_id))

    def expect(self, participant_id: str, session_id: str, within: float) -> None:
        """Give a participant not heard from yet ``within`` seconds (plus grace) to poll:
        the participants of a session resumed after a restart."""
        now = time.monotonic()
        with self._lock:
            if participant_id not in self._heard and participant_id not in self._offline:
                self._heard[participant_id] = _Heard(session_id, now, now + within + self.grace)

    def mark_offline(self, participant_id: str, session_id: str) -> None:
        """A participant that was offline when the server stopped (its ``offline_at``):
        offline until it is heard from."""
        with self._lock:
            if participant_id not in self._heard:
                now = time.monotonic()
                self._heard[participant_id] = _Heard(session_id, now, now)
                self._offline[participant_id] = session_id

    def is_offline(self, participant_id: str) -> bool:
        return participant_id in self._offline  # one dict lookup: read without the lock

    def silent_for(self, participant_id: str) -> float:
        """Seconds since the participant was last heard from (0 when never)."""
        with self._lock:
            heard = self._heard.get(participant_id)
        return 0.0 if heard is None else time.monotonic() - heard.at

    def sweep(self) -> tuple[list[Silence], list[tuple[str, str]]]:
        """Mark the participants past their deadline offline.

        Returns
        -------
        went_silent : list of Silence
            Newly offline.
        came_back : list of (participant id, session id)
            Offline participants heard from since the last sweep (already live again).
        """
        now = time.monotonic()
        silent = []
        with self._lock:
            for participant_id, heard in self._heard.items():
                if heard.deadline < now and participant_id not in self._offline:
                    silent.append(Silence(participant_id, heard.session_id, now - heard.at))
            for found in silent:
                self._offline[found.participant_id] = found.session_id
            back, self._back = self._back, []
        return silent, back

    def heard_since(self, since: float) -> list[str]:
        """The participants heard from at or after monotonic time ``since``."""
        with self._lock:
            return [pid for pid, heard in self._heard.items() if heard.at >= since]

    def forget_session(self, session_id: str) -> None:
        """Drop a session that ended: its participants are no longer expected to poll."""
        with self._lock:
            for participant_id in [p for p, h in self._heard.items() if h.session_id == session_id]:
                del self._heard[participant_id]
            for participant_id in [p for p, s in self._offline.items() if s == session_id]:
                del self._offline[participant_id]
            self._back = [entry for entry in self._back if entry[1] != session_id]


class LivenessSweep(threading.Thread):
    """The engine's sweep thread: every :attr:`Liveness.sweep_interval` until the engine
    stops, it fails the outstanding tasks of the participants gone silent, records and logs
    who went offline and who came back."""

    def __init__(self, engine: SessionEngine) -> None:
        super().__init__(name="liveness", daemon=True)
        self._engine = engine

    def run(self) -> None:
        engine = self._engine
        written = time.monotonic()
        while not engine.stopping.wait(engine.liveness.sweep_interval):
            try:
                silent, back = engine.liveness.sweep()
                for silence in silent:
                    self._went_offline(silence)
                for participant_id, session_id in back:
                    self._came_back(participant_id, session_id)
                if time.monotonic() - written >= SEEN_WRITE_INTERVAL:
                    written = self.write_seen(since=written)
            except Exception:  # a store error here must not end the sweeps
                logger.exception("the liveness sweep failed")

    def write_seen(self, since: float) -> float:
        """Write ``last_seen_at`` of the participants heard from since ``since`` (monotonic),
        in one statement; returns the time to count the next batch from."""
        now = time.monotonic()
        heard = self._engine.liveness.heard_since(since)
        if heard:
            self._engine.state.touch_participants(heard)
        return now

    def _client_name(self, participant_id: str) -> str:
        record = self._engine.state.get_participant(participant_id)
        return record.client_name if record is not None else participant_id

    def _went_offline(self, silence: Silence) -> None:
        """Fail the silent participant's outstanding tasks at once and say so."""
        engine, session_id = self._engine, silence.session_id
        session = engine.state.get_session(session_id)
        if session is None or session.status.ended:
            engine.liveness.forget_session(session_id)
            return
        name = self._client_name(silence.participant_id)
        reason = f"client {name!r} offline: no poll for {silence.silent_for:.0f} s"
        engine.state.set_participant_offline(silence.participant_id, utcnow())
        tasks = engine.hub.take_participant(silence.participant_id)
        context = engine.context_of(session_id)
        for task in tasks:
            if not task.future.done():
                task.future.set_result(task.failure("offline", reason))
            if context is not None:
                context.record_failure_later(task.id, reason)
            else:
                engine.state.fail_task(task.id, reason)
        outstanding = {0: "no outstanding task", 1: "its 1 outstanding task failed"}.get(
            len(tasks), f"its {len(tasks)} outstanding tasks failed"
        )
        line = f"{reason}; {outstanding}"
        logger.warning("session %s: %s", session_id, line)
        # Written now, not behind the session's queued writes: the sweep must not wait on
        # them, and the line must land even when the session ends meanwhile.
        engine.log(session_id, line)

    def _came_back(self, participant_id: str, session_id: str) -> None:
        engine = self._engine
        engine.state.set_participant_offline(participant_id, None)
        name = self._client_name(participant_id)
        line = f"client {name!r} is back online; its next tasks reach it"
        logger.warning("session %s: %s", session_id, line)
        engine.log(session_id, line)
        engine.notify_join()
