"""A client's privacy plan for one session, and the rounds it may still release.

Every package that trains under differential privacy keeps one :class:`ReleaseLedger` in
its executor. It

* makes the privacy plan once, from the session's ``num_rounds`` (sent in every training
  task's meta) and refuses a task that announces a different number later: the plan, and so
  the noise, was calibrated for that many rounds;
* refuses a round outside ``1 .. num_rounds``, so the planned total is never exceeded;
* refuses a round at or before the last one this executor released: training it again would
  be a second, differently noised release the plan did not count.

It keeps no replies. Answering a repeated question with the *same* release (a server that
restarted re-asks the round it had not checkpointed) is the client runtime's one
release-once mechanism, the :func:`fedsilo.client.mods.release_once` mod: it stores each
reply frame on the client's disk before sending it and replays those bytes when the same
question (kind, round, meta, arrays) comes back, so an identical question never reaches the
executor twice, in this process or after a restart. What reaches the ledger a second time
is a *different* question for a round already released, and that is refused.

The epsilon reported after round ``r`` needs no state: it is
``epsilon_spent(plan, plan.steps_through(r))`` (see :mod:`fedsilo.privacy.accounting`).
This module imports the accountant (Opacus, hence torch) only when a plan is made or
reported, so a workflow module may import it on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fedsilo.errors import TaskError

if TYPE_CHECKING:
    from fedsilo.privacy.accounting import DPSGDPlan, GaussianPlan

__all__ = ["ReleaseLedger", "privacy_report"]

Plan = TypeVar("Plan", "DPSGDPlan", "GaussianPlan")


class ReleaseLedger(Generic[Plan]):
    """Plans a silo's private releases and guards their rounds (see the module docstring).

    Parameters
    ----------
    make_plan : callable
        ``make_plan(num_rounds)`` returns the silo's plan for a session of that many rounds
        (e.g. a partial :func:`fedsilo.privacy.plan_dpsgd`).
    """

    def __init__(self, make_plan: Callable[[int], Plan]) -> None:
        self._make_plan: Callable[[int], Plan] = make_plan
        self._plan: Plan | None = None
        #: the last round released by this executor (0: none yet)
        self.last_released = 0

    def plan(self, meta: dict[str, Any]) -> Plan:
        """The plan for the session the task's ``meta["num_rounds"]`` announces.

        Raises
        ------
        TaskError
            When ``num_rounds`` is missing or not an integer >= 1, or differs from the one
            the plan was made for.
        """
        rounds = meta.get("num_rounds")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise TaskError(
                "Under differential privacy a training task's meta must carry 'num_rounds' "
                f"(the session's round count, an integer >= 1) to plan the budget. Got {rounds!r}."
            )
        if self._plan is None:
            self._plan = self._make_plan(rounds)
        elif self._plan.rounds != rounds:
            raise TaskError(
                f"The privacy budget was planned for {self._plan.rounds} rounds; this task "
                f"announces {rounds}. A client does not re-plan mid-session."
            )
        return self._plan

    def admit(self, plan: Plan, server_round: int) -> None:
        """Check that round ``server_round`` may be released now.

        Raises
        ------
        TaskError
            When ``server_round`` is outside ``1 .. plan.rounds``, or not after the last
            round released (an identical repeat is replayed by the release-once mod before
            it gets here; a different question for a released round is a second release).
        """
        if not 1 <= server_round <= plan.rounds:
            raise TaskError(
                f"Under differential privacy this client trains rounds 1..{plan.rounds} "
                f"only (its budget covers that many). Got round {server_round}."
            )
        if server_round <= self.last_released:
            raise TaskError(
                f"Round {server_round} was released before (this client is at round "
                f"{self.last_released}); releasing it again, for a different question, would "
                "be another noisy release beyond the budget. Only the identical question is "
                "answered again, with the same reply."
            )

    def mark_released(self, server_round: int) -> None:
        """Note that round ``server_round`` was released (after :meth:`admit` allowed it)."""
        self.last_released = max(self.last_released, server_round)


def privacy_report(plan: DPSGDPlan | GaussianPlan, server_round: int) -> dict[str, Any]:
    """The reply fields that report a client's privacy spending after ``server_round``.

    Returns
    -------
    dict
        ``epsilon_spent`` (after rounds ``1 .. server_round``), ``epsilon_budget``,
        ``delta`` and ``noise_multiplier``: numbers derived from the config and the row
        count only.
    """
    from fedsilo.privacy.accounting import epsilon_spent

    return {
        "epsilon_spent": epsilon_spent(plan, plan.steps_through(server_round)),
        "epsilon_budget": plan.epsilon,
        "delta": plan.delta,
        "noise_multiplier": plan.noise_multiplier,
    }
