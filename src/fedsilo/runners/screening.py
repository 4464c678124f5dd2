"""Reply screening against what a participant declared, where "nothing" is no bound.

The engine screens a reply (:func:`fedsilo.federation.expect.screen`) against the dataset its
participant declared on joining. A test's executors often declare nothing -- not "no rows",
which would refuse every count -- so the in-process runner screens such a participant's counts
unbounded, and otherwise exactly as the engine does.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedsilo.federation import Outcome, Reply, TaskGroup
from fedsilo.federation.expect import screen
from fedsilo.server.engine.group import EngineTaskGroup
from fedsilo.wire import DatasetSummary

__all__ = ["DeclaredTaskGroup"]


class DeclaredTaskGroup(EngineTaskGroup):
    """An :class:`EngineTaskGroup` whose count bounds are the given declarations only."""

    declared: Mapping[str, DatasetSummary]

    @classmethod
    def adopt(cls, group: TaskGroup, declared: Mapping[str, DatasetSummary]) -> None:
        """Make the engine's ``group`` screen by ``declared`` (client name -> summary)."""
        if not isinstance(group, EngineTaskGroup):
            raise TypeError(f"group: expected an EngineTaskGroup, got {type(group).__name__}")
        group.__class__ = cls
        group.declared = declared  # type: ignore[attr-defined]

    def _screen(self, index: int, reply: Reply) -> Outcome:
        task = self.tasks[index]
        outcome = screen(task, reply, self.declared.get(task.to.client_name))
        if not isinstance(outcome, Reply):
            # As the engine's: recorded on the task, logged, its gate slot freed.
            slot = self._context.take_slot(reply)
            self._context.reject(self._task_ids[index], outcome, reply.meta)
            del reply
            if slot is not None:
                slot.release()
        return outcome
