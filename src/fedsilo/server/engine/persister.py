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
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from fedsilo.server.state import StateStore

__all__ = ["Persister", "Write", "WriterStopped"]

logger = logging.getLogger("fedsilo.engine")

#: one job's worth of work: usually one :meth:`StateStore.apply` (one transaction), after an
#: artifact write for a checkpoint or a model
Write = Callable[[StateStore], None]


class WriterStopped(RuntimeError):
    """A write submitted after the session's writer was closed (its session ended)."""


class Persister:
    """Runs :data:`Write` jobs one after another against the state store."""

    def __init__(self, state: StateStore, name: str) -> None:
        self._state = state
        self._jobs: queue.SimpleQueue[tuple[Write, Future[None]] | None] = queue.SimpleQueue()
        #: the first write that failed; the session fails with it
        self.error: BaseException | None = None
        # Guards the queue's end: no job is queued behind the stop marker, where it would
        # never run and its waiter would wait forever (a reply's failure recorded while the
        # session ends).
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"writes-{name}", daemon=True)
        self._thread.start()

    def submit(self, write: Write) -> Future[None]:
        done: Future[None] = Future()
        with self._closing:
            if self._closed or not self._thread.is_alive():
                done.set_exception(WriterStopped("the session's writer has stopped"))
                return done
            self._jobs.put((write, done))
        return done

    def run(self, write: Write) -> None:
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

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            write, done = job
            try:
                write(self._state)
            except BaseException as exc:
                if self.error is None:
                    logger.exception("a session write failed")
                    self.error = exc
                done.set_exception(exc)
            else:
                done.set_result(None)
            # A job is a closure over its context: held while this thread waits for the next
            # one, it would keep a dropped context (and what it references) alive.
            del job, write, done
