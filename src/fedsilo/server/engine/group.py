"""The engine's task group: the federation :class:`TaskGroup` plus the reply gate's slots."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING

from fedsilo.federation import Failure, FailureCause, Outcome, Reply, Task, TaskGroup
from fedsilo.federation.expect import screen
from fedsilo.server.engine.hub import PendingTask

if TYPE_CHECKING:
    from fedsilo.server.engine.context import EngineContext

__all__ = ["EngineTaskGroup"]


class EngineTaskGroup(TaskGroup):
    """A :class:`TaskGroup` that frees a reply's gate slot once the workflow is done with it
    (it asked for the next outcome), turns a reply that does not meet its task's ``expect``
    into a failure (:func:`fedsilo.federation.expect.screen`) and unwinds the workflow when
    the session is canceled."""

    def __init__(
        self,
        context: EngineContext,
        tasks: Sequence[Task],
        pending: Sequence[PendingTask],
        default_timeout: float,
    ) -> None:
        self._context = context
        # Ids only: a task's future (and so its reply) must not outlive its hand-out here.
        self._task_ids = [p.id for p in pending]
        super().__init__(
            tasks, [p.future for p in pending], self._expire_one, default_timeout=default_timeout
        )

    def outcomes(self, timeout: float | None = None) -> Iterator[Outcome]:
        """As :meth:`TaskGroup.outcomes`; a reply's gate slot is freed when the workflow asks
        for the next outcome, after this generator dropped the reply (so a workflow that
        dropped it too never has the next large reply read while this one is alive)."""
        context = self._context
        limit = self._default_timeout if timeout is None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while self._pending:
            context.check_alive()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, not_done = wait_futures(
                list(self._pending), timeout=remaining, return_when=FIRST_COMPLETED
            )
            del not_done
            if not done:
                self._expire_all("timeout", f"no reply within {limit:g} s")
                continue
            while done:
                future = done.pop()
                index = self._pending.pop(future)
                outcome = future.result()
                del future
                if isinstance(outcome, Reply):
                    # Checked here, on the workflow's thread, not in the reply handler: the
                    # event loop never spends a pass over a large update.
                    outcome = self._screen(index, outcome)
                if isinstance(outcome, Failure):
                    self.failures.append(outcome)
                else:
                    self.num_replies += 1
                context.check_alive()
                slot = context.take_slot(outcome) if isinstance(outcome, Reply) else None
                try:
                    yield outcome
                finally:
                    del outcome
                    if slot is not None:
                        slot.release()
                        del slot
        context.check_alive()

    def _screen(self, index: int, reply: Reply) -> Outcome:
        """The reply, or the failure it is when it does not meet its task's ``expect``
        (recorded on the task, logged, its gate slot freed)."""
        task = self.tasks[index]
        outcome = screen(task, reply, self._context.declared(task.to))
        if isinstance(outcome, Failure):
            slot = self._context.take_slot(reply)
            self._context.reject(self._task_ids[index], outcome, reply.meta)
            del reply
            if slot is not None:
                slot.release()
        return outcome

    def _expire_one(self, index: int, cause: FailureCause, reason: str) -> bool:
        return self._context.expire(self._task_ids[index], cause, reason)
