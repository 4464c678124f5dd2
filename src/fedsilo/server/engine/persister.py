"""A session's writes, run in order on a thread of their own, off the round's critical path.

Between two rounds a workflow used to wait for the checkpoint file, the round's metrics and the
task rows to be committed before the next broadcast could go out (about 2 ms of a 4 ms no-op
round at N = 2, measured with cProfile). The writes only have to happen in order and before
anyone relies on them, so the engine queues them here and the next round starts at once:

* order is kept (one thread, FIFO): a checkpoint is never overtaken by the next one, a task
  row is inserted before a failure updates it;
* whoever needs a write done waits for it (:meth:`Persister.run`, :meth:`Persister.drain`):
  the end of the session, a failure the API reports, ``save_model``;
* a crash loses at most the queued writes of the current round, which then resumes from the
  previous checkpoint -- exactly what a crash just before the checkpoint always meant.

Most jobs are a :class:`Batch`: the session's writes recorded since the last one, as one
:class:`~fedsilo.server.state.SessionWrites`. When the writer runs behind, the batches queued
one after another are merged and applied in one transaction (a round's task insert, the
checkpoint's records and a log line were three commits; at 100 clients the writer held the
GIL for a fifth of the server's busy time). Their files keep their places around the
commit: a model's file before the record that names it, a checkpoint's after the records of
its round.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from fedsilo.server.state import SessionWrites, StateStore

__all__ = ["Batch", "Persister", "Write", "WriterStopped"]

logger = logging.getLogger("fedsilo.engine")

#: one job's worth of work: usually one :meth:`StateStore.apply` (one transaction), after an
#: artifact write for a checkpoint or a model
Write = Callable[[StateStore], None]
#: batches merged into one transaction at most
_MAX_MERGED = 64


@dataclass(frozen=True)
class Batch:
    """A job that is one :meth:`StateStore.apply`, mergeable with its queued neighbours."""

    #: the writes, collected when the job runs (what was recorded in memory by then)
    collect: Callable[[], SessionWrites]
    #: a file the writes name, written before they are committed
    before: Callable[[], None] | None = None
    #: a file that must not be newer than the writes, written once they are committed
    after: Callable[[], None] | None = None


_Job = tuple[Write | Batch, "Future[None]"]


class WriterStopped(RuntimeError):
    """A write submitted after the session's writer was closed (its session ended)."""


class Persister:
    """Runs :data:`Write` jobs one after another against the state store."""

    def __init__(self, state: StateStore, name: str) -> None:
        self._state = state
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: the job taken from the queue behind a run of batches, to run next
        self._held: list[_Job | None] = []
        #: the first write that failed; the session fails with it
        self.error: BaseException | None = None
        # Guards the queue's end: no job is queued behind the stop marker, where it would
        # never run and its waiter would wait forever (a reply's failure recorded while the
        # session ends).
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"writes-{name}", daemon=True)
        self._thread.start()

    def submit(self, write: Write | Batch) -> Future[None]:
        done: Future[None] = Future()
        with self._closing:
            if self._closed or not self._thread.is_alive():
                done.set_exception(WriterStopped("the session's writer has stopped"))
                return done
            self._jobs.put((write, done))
        return done

    def run(self, write: Write | Batch) -> None:
        """Queue ``write`` and wait until it (and everything queued before it) is committed."""
        self.submit(write).result()

    def drain(self) -> None:
        """Wait until everything queued so far is committed."""
        self.run(lambda _state: None)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued writes, then stop the thread; later submits raise
        :class:`WriterStopped`."""
        with self._closing:
            if not self._closed:
                self._closed = True
                self._jobs.put(None)
        self._thread.join(timeout)

    def _next(self) -> _Job | None:
        return self._held.pop() if self._held else self._jobs.get()

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            if isinstance(job[0], Batch):
                self._run_batches(self._gather(job))
            else:
                self._run_write(job)
            # A job is a closure over its context: held while this thread waits for the next
            # one, it would keep a dropped context (and what it references) alive.
            del job

    def _gather(self, first: _Job) -> list[_Job]:
        """``first`` and the batches queued right behind it; the job that ends the run (a
        plain write, the stop marker) is held to run next."""
        jobs = [first]
        while len(jobs) < _MAX_MERGED:
            try:
                queued = self._jobs.get_nowait()
            except queue.Empty:
                break
            if queued is None or not isinstance(queued[0], Batch):
                self._held.append(queued)
                break
            jobs.append(queued)
        return jobs

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:
            logger.exception("a session write failed")
            self.error = exc

    def _run_write(self, job: _Job) -> None:
        write, done = job
        assert not isinstance(write, Batch)
        try:
            write(self._state)
        except BaseException as exc:
            self._failed(exc)
            done.set_exception(exc)
        else:
            done.set_result(None)

    def _run_batches(self, jobs: list[_Job]) -> None:
        batches = [batch for batch, _ in jobs if isinstance(batch, Batch)]
        try:
            merged: SessionWrites | None = None
            for batch in batches:
                if batch.before is not None:
                    batch.before()
                writes = batch.collect()
                if merged is None:
                    merged = writes
                else:
                    merged.extend(writes)
            if merged is not None:
                self._state.apply(merged)
            for batch in batches:
                if batch.after is not None:
                    batch.after()
        except BaseException as exc:
            self._failed(exc)
            for _, done in jobs:
                done.set_exception(exc)
        else:
            for _, done in jobs:
                done.set_result(None)
