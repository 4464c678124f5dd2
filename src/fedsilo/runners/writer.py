"""The session writer of an in-process context, which lets go of each job once it ran.

The engine's :class:`~fedsilo.server.engine.persister.Persister` thread keeps its last job
bound while it waits for the next one. A job is a closure over its context, so an idle writer
keeps the last context it wrote for alive: harmless on a server, which closes a session's
writer when the session ends, but an in-process context is only ever dropped, never closed,
and must be collectable (its finalizer stops the threads and frees its checkpoints).
"""

from __future__ import annotations

from concurrent.futures import Future

from fedsilo.server.engine.persister import Persister, Write
from fedsilo.server.state import StateStore

__all__ = ["LocalWriter"]


class _Once:
    """A job that drops its closure when it runs."""

    def __init__(self, write: Write) -> None:
        self._write: Write | None = write

    def __call__(self, state: StateStore) -> None:
        write, self._write = self._write, None
        if write is not None:
            write(state)


class LocalWriter(Persister):
    """A :class:`Persister` whose idle thread holds no closure of a job that ran."""

    def submit(self, write: Write) -> Future[None]:
        return super().submit(_Once(write))
