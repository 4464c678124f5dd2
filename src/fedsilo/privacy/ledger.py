"""A client's record of its private releases across the rounds of one session.

Every package that trains under differential privacy keeps one :class:`ReleaseLedger` in
its executor. It

* makes the privacy plan once, from the session's ``num_rounds`` (sent in every training
  task's meta) and refuses a task that announces a different number later: the plan, and so
  the noise, was calibrated for that many rounds;
* refuses a round outside ``1 .. num_rounds``, so the planned total is never exceeded;
* answers a repeated request for the round it released last with the *same* reply (a server
  that restarted re-asks the round it had not checkpointed): sending the same release
  twice reveals nothing new, while training it again with fresh noise would be a second,
  unaccounted release. A round older than the last one released is refused.

The epsilon reported after round ``r`` needs no state: it is
``epsilon_spent(plan, plan.steps_through(r))`` (see :mod:`fedsilo.privacy.accounting`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fedsilo.errors import TaskError
from fedsilo.privacy.accounting import DPSGDPlan, GaussianPlan, epsilon_spent
from fedsilo.wire import Arrays

__all__ = ["ReleaseLedger", "privacy_report"]

Plan = TypeVar("Plan", DPSGDPlan, GaussianPlan)


class ReleaseLedger(Generic[Plan]):
    """Plans a silo's private releases and remembers the last one (see the module docstring).

    Parameters
    ----------
    make_plan : callable
        ``make_plan(num_rounds)`` returns the silo's plan for a session of that many rounds
        (e.g. a partial :func:`fedsilo.privacy.plan_dpsgd`).
    """

    def __init__(self, make_plan: Callable[[int], Plan]) -> None:
        self._make_plan: Callable[[int], Plan] = make_plan
        self._plan: Plan | None = None
        self._last: tuple[int, dict[str, Any], Arrays] | None = None

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

    def replay(self, plan: Plan, rnd: int) -> tuple[dict[str, Any], Arrays] | None:
        """The reply already released for round ``rnd``, or None if it is a new round.

        Raises
        ------
        TaskError
            When ``rnd`` is outside ``1 .. plan.rounds`` or older than the last round
            released.
        """
        if not 1 <= rnd <= plan.rounds:
            raise TaskError(
                f"Under differential privacy this client trains rounds 1..{plan.rounds} "
                f"only (its budget covers that many). Got round {rnd}."
            )
        if self._last is None:
            return None
        last_round, meta, arrays = self._last
        if rnd == last_round:
            return dict(meta), dict(arrays)
        if rnd < last_round:
            raise TaskError(
                f"Round {rnd} was released before (this client is at round {last_round}); "
                "training it again would release another noisy update beyond the budget."
            )
        return None

    def record(self, rnd: int, meta: dict[str, Any], arrays: Arrays) -> None:
        """Remember the reply released for round ``rnd`` (only the latest is kept)."""
        self._last = (rnd, dict(meta), dict(arrays))


def privacy_report(plan: DPSGDPlan | GaussianPlan, rnd: int) -> dict[str, Any]:
    """The reply fields that report a client's privacy spending after round ``rnd``.

    Returns
    -------
    dict
        ``epsilon_spent`` (after rounds ``1 .. rnd``), ``epsilon_budget``, ``delta`` and
        ``noise_multiplier``: numbers derived from the config and the row count only.
    """
    return {
        "epsilon_spent": epsilon_spent(plan, plan.steps_through(rnd)),
        "epsilon_budget": plan.epsilon,
        "delta": plan.delta,
        "noise_multiplier": plan.noise_multiplier,
    }
