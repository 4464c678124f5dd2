"""A round's evaluation carried by the next round's fit tasks: one exchange per round.

The clients that evaluate the global model of round ``r`` are, with the strategies' defaults
(``fraction_fit = fraction_evaluate = 1``), the clients that train in round ``r + 1``, from
the same arrays. When a package's fit task can evaluate the arrays it receives before
training (``RoundPlan(fit_evaluates=True)``), the round loop sends no evaluate task for such
a round: the fit tasks of round ``r + 1`` carry ``meta["evaluate"]`` (the evaluate meta of
round ``r``), each reply carries the metrics in ``meta["evaluation"]``, and round ``r`` is
recorded and checkpointed once the fit replies of round ``r + 1`` are in. The metrics are the
ones a separate evaluate task would have returned (the same weights, the same data); a small
round of ten clients cost two exchanges and the server's task writes twice over.

The last round, a round whose evaluating clients are not the next round's fit clients, secure
aggregation and differential privacy keep the separate evaluate task.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedsilo.errors import TaskError
from fedsilo.federation import Participant, Reply, SessionContext
from fedsilo.federation.expect import ReplySpec, check_reply
from fedsilo.wire import Arrays, DatasetSummary

__all__ = ["EVALUATE_KEY", "EVALUATION_KEY", "DeferredEvaluation"]

#: fit task meta key: evaluate the received arrays first, with this evaluate meta
EVALUATE_KEY = "evaluate"
#: fit reply meta key: the metrics of that evaluation (an evaluate reply's meta)
EVALUATION_KEY = "evaluation"


@dataclass
class DeferredEvaluation:
    """Round ``round``'s evaluation, waiting for the fit replies of the next round.

    Attributes
    ----------
    round : int
    weights : dict of str to ndarray
        The round's global model (what the evaluating clients receive and evaluate).
    meta : dict
        The round's evaluate meta (``round`` and the strategy's evaluate config).
    evaluators : list of Participant
    strategy_state : dict of str to ndarray
        The strategy's state after the round's aggregation, for the round's checkpoint
        (the next round's aggregation moves it on before the round is recorded).
    fit : object
        The round's fit log (train losses, per-client fit metrics).
    replies : list of Reply
        The evaluations collected so far, as evaluate replies of the round.
    """

    round: int
    weights: Arrays
    meta: dict[str, Any]
    evaluators: Sequence[Participant]
    strategy_state: Arrays
    fit: Any
    replies: list[Reply] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def collect(
        self,
        ctx: SessionContext,
        replies: Iterable[Reply],
        spec: ReplySpec,
        accept_failures: bool,
    ) -> Iterator[Reply]:
        """Pass the next round's fit replies on, keeping the evaluation each carries.

        An evaluation missing or not meeting ``spec`` (the evaluate task's expectation) is a
        failed evaluation: it raises at once under ``accept_failures = false``, else it is
        left out and logged by :meth:`check`.

        Raises
        ------
        TaskError
            As above.
        """
        wanted = {p.id for p in self.evaluators}
        for reply in replies:
            if reply.participant.id in wanted:
                self._keep(reply, spec, accept_failures, _declared(ctx, reply.participant))
            yield reply

    def _keep(
        self,
        reply: Reply,
        spec: ReplySpec,
        accept_failures: bool,
        declared: DatasetSummary | None,
    ) -> None:
        name = reply.participant.client_name
        metrics = reply.meta.get(EVALUATION_KEY)
        if not isinstance(metrics, Mapping):
            problem = f"its fit reply carries no {EVALUATION_KEY!r} metrics"
        else:
            evaluation = Reply(
                reply.participant, dict(metrics), {}, kind="evaluate", round=self.round
            )
            found = check_reply(spec, evaluation, declared)
            if found is None:
                self.replies.append(evaluation)
                return
            problem = f"evaluate reply (round {self.round}) rejected: {found.message}"
        if not accept_failures:
            raise TaskError(
                f"round {self.round}: task 'evaluate' failed and accept_failures is false: "
                f"client {name!r}: {problem}"
            )
        self.rejected.append(f"client {name!r}: {problem}")

    def check(self, ctx: SessionContext, min_replies: int) -> list[Reply]:
        """The round's evaluations, once the next round's fit replies are all in.

        Raises
        ------
        TaskError
            When fewer than ``min_replies`` evaluations came, as a separate evaluate task
            with too few successful replies would.
        """
        missing = len(self.evaluators) - len(self.replies) - len(self.rejected)
        listed = "; ".join(self.rejected)
        if self.rejected or missing:
            ctx.log(
                f"round {self.round}: task 'evaluate' failed on "
                f"{len(self.rejected) + missing} client(s)"
                + (f": {listed}" if listed else " (their fit of the next round failed)")
            )
        if len(self.replies) < min_replies:
            raise TaskError(
                f"round {self.round}: task 'evaluate' got {len(self.replies)} successful "
                f"replies; at least {min_replies} needed" + (f" ({listed})" if listed else "")
            )
        return self.replies


def _declared(ctx: SessionContext, participant: Participant) -> DatasetSummary | None:
    """What bounds the participant's counts, as the context screens its replies: both
    contexts say it with ``declared`` (the engine: the dataset declared on joining; the
    in-process runner: only a summary it was given)."""
    declared = getattr(ctx, "declared", None)
    if declared is None:
        return participant.dataset
    summary: DatasetSummary | None = declared(participant)
    return summary
