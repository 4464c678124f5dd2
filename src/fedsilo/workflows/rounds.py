"""The strategy-driven round loop of horizontal federated learning.

One loop serves every package that trains a model by rounds of local training (ffnet, glm's
``sgd`` solver, ...). Each round::

    configure_fit        the strategy samples the round's clients (seeded by the round)
    send fit             one task per client, sharing one payload: the global arrays; a
                         reply must carry them back (names, shapes, dtypes, finite) and a
                         ``num_examples`` within the client's declared ``train_rows``, or
                         it is a failed task (:mod:`fedsilo.federation.expect`)
    aggregate_fit        replies stream from ``group.as_completed()`` into the strategy's
                         running sum; the server never holds the round's updates together
    configure_evaluate   the strategy samples the evaluating clients
    send evaluate        the new global arrays
    aggregate_evaluate   pooled federated metrics (:mod:`fedsilo.workflows.metrics`)
    evaluate             the strategy's server-side ``evaluate_fn``, when it has one
    record_round         federated and per-client metrics
    select, checkpoint   best-model selection (:mod:`fedsilo.workflows.selection`); the global
                         arrays, the best ones, the strategy's state and the package's state

With ``RoundPlan(fit_evaluates=True)`` a round's evaluate step rides on the next round's fit
tasks when the same clients do both (:mod:`fedsilo.workflows.deferred`): one exchange per
round, the round recorded and checkpointed once those fit replies are in.

After the last round ``save_model`` stores the best (``save_best_model``) or the last
model. The strategy's ``evaluate_fn`` (Flower's server-side evaluation) is recorded in the
round's federated metrics as ``server_loss`` and ``server_<name>``; unlike Flower, the initial
model is not evaluated, since round 0 is no round of the session's metrics.

A package supplies a :class:`RoundPlan`: its strategy, its seed, the meta its fit tasks carry
and how the first global model is obtained (:class:`Start`).

Checkpoint arrays are named ``global/<name>``, ``best/<name>`` and ``strategy/<name>``; its
meta holds the selection's state, the clients' ``epsilon_spent`` and the package's ``state``.

Under ``model_config["secure_aggregation"]["enabled"]`` the fit step is
:func:`fedsilo.workflows.secure.secure_mean` instead: the sampled clients' updates are masked
and only their weighted mean and total weight are decoded, so the strategy aggregates ONE
result (that mean, weighing the total); per-client ``train_loss`` is not released, so the
round's federated metrics carry no ``train_loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Participant, Reply, SessionContext, Task
from fedsilo.federation.expect import Count, ReplySpec
from fedsilo.privacy.dp import DifferentialPrivacyParams
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.strategies import Strategy, UnweightedAverage
from fedsilo.wire import Arrays, DatasetSummary
from fedsilo.workflows.deferred import EVALUATE_KEY, DeferredEvaluation
from fedsilo.workflows.metrics import WeightedMean, client_metrics, finite_number
from fedsilo.workflows.secure import secure_mean
from fedsilo.workflows.selection import BestModel
from fedsilo.workflows.tasks import stream

__all__ = [
    "EVALUATE_SPEC",
    "FIT_COUNTS",
    "RoundPlan",
    "RoundsResult",
    "Start",
    "run_rounds",
]

#: what a fit reply's meta must count (besides the global model's arrays, names, shapes and
#: dtypes, all finite): the rows it trained on, at least one and at most the ``train_rows``
#: the client declared on joining -- the weight every strategy's mean gives it
FIT_COUNTS = {"num_examples": Count("train_rows")}
#: an evaluate reply: no arrays, finite; ``test_num_examples`` (which weighs the pooled
#: metrics) at most the rows it may evaluate on, and 0 allowed: a client under differential
#: privacy without a test set evaluates nothing (``evaluated_on`` "none")
EVALUATE_SPEC = ReplySpec(
    arrays={},
    counts={"test_num_examples": Count("evaluation_rows", minimum=0, required=False)},
)

#: fit reply meta keys recorded as the client's own per-round metrics, besides train_loss
FIT_METRIC_PREFIX = "fit_"

_GLOBAL = "global/"
_BEST = "best/"
_STRATEGY = "strategy/"
#: checkpoint meta key of the clients' latest epsilon_spent (DP sessions)
_SPENT = "epsilon_spent"
_STATE = "state"


@dataclass(frozen=True)
class Start:
    """The first global model of a fresh session, and package state to keep with it.

    Attributes
    ----------
    arrays : dict of str to ndarray
    state : dict
        JSON values the package needs after a restart and in the saved model's meta (glm's
        pooled ``weight_sum``); kept in every checkpoint.
    """

    arrays: Arrays
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundPlan:
    """What a package tells the round loop.

    Parameters
    ----------
    strategy : Strategy
        Samples, aggregates, pools metrics; carries the per-round hooks.
    start : callable(participants) -> Start
        The first global model, called once on a fresh start (after the clients joined);
        :func:`~fedsilo.workflows.tasks.ask_initial_arrays` asks a client for it.
    seed : int
        Seeds each round's client sampling (with the round number).
    fit_meta : mapping
        Meta every fit task carries besides ``round``, ``num_rounds`` and the strategy's
        ``fit_config`` (e.g. ``local_epochs``).
    train_weight_key : str, default "num_examples"
        The fit reply meta key that weighs each client's ``train_loss`` in the federated
        ``train_loss``.
    save_best_metric : str, optional
        ``save_best_model.metric``; None saves the last round's model.
    save_best_mode : {"min", "max"}
    privacy : DifferentialPrivacyParams, optional
        The session's ``differential_privacy_params`` when clients train under differential
        privacy: every fit reply must then carry ``epsilon_spent``, and the saved model's meta
        gets a ``privacy`` entry (``epsilon``, ``max_grad_norm``) with everyone's final
        spending.
    model_meta : mapping
        Extra entries of the saved model's meta (``solver``, ...).
    fit_evaluates : bool, default False
        The package's fit task evaluates the arrays it receives first when its meta carries
        ``"evaluate"`` (an evaluate task's meta) and replies the metrics under
        ``"evaluation"``: a round's evaluation then rides on the next round's fit when the
        same clients do both (:mod:`fedsilo.workflows.deferred`).
    """

    strategy: Strategy
    start: Callable[[Sequence[Participant]], Start]
    seed: int
    fit_meta: Mapping[str, Any] = field(default_factory=dict)
    train_weight_key: str = "num_examples"
    save_best_metric: str | None = None
    save_best_mode: Literal["min", "max"] = "min"
    privacy: DifferentialPrivacyParams | None = None
    model_meta: Mapping[str, Any] = field(default_factory=dict)
    fit_evaluates: bool = False


@dataclass(frozen=True)
class RoundsResult:
    """What the loop saved: the model's arrays, its meta and its round."""

    arrays: Arrays
    meta: dict[str, Any]
    round: int


def run_rounds(ctx: SessionContext, plan: RoundPlan) -> RoundsResult:
    """Run the session's rounds (or the rest of them, after a restart) and save the model.

    Raises
    ------
    TaskError
        When a round cannot go on: too few successful replies, a failure under
        ``accept_failures = false``, a DP reply without ``epsilon_spent``, or a global model
        that is no longer finite.
    """
    strategy = plan.strategy
    params = strategy.params
    num_rounds = ctx.session.num_rounds
    needed = max(
        ctx.session.min_num_clients,
        params.min_available_clients,
        params.min_fit_clients,
        params.min_eval_clients,
    )
    if needed > ctx.session.min_num_clients:
        ctx.log(f"waiting for {needed} clients, as the strategy parameters require")
    participants = ctx.wait_for_clients(needed)
    secure = _secure_spec(ctx)
    best = BestModel(plan.save_best_metric, plan.save_best_mode)
    spent: dict[str, float] = {}  # each client's latest epsilon_spent (DP only)

    checkpoint = ctx.restore()
    if checkpoint is not None:
        weights = _with_prefix(checkpoint.arrays, _GLOBAL)
        if not weights:
            raise TaskError(
                f"The checkpoint of round {checkpoint.round} holds no 'global/' arrays; it "
                "was not written by the round loop."
            )
        strategy.load_state_arrays(_with_prefix(checkpoint.arrays, _STRATEGY))
        best.restore(checkpoint.meta, _with_prefix(checkpoint.arrays, _BEST))
        spent = dict(checkpoint.meta.get(_SPENT) or {})
        state = dict(checkpoint.meta.get(_STATE) or {})
        first = checkpoint.round + 1
    else:
        start = plan.start(participants)
        weights, state, first = start.arrays, dict(start.state), 1

    def finish(
        server_round: int,
        weights: Arrays,
        evaluations: list[Reply],
        fit: _FitLog,
        strategy_state: Arrays,
    ) -> None:
        """aggregate_evaluate, evaluate_fn, record_round, select, checkpoint."""
        if server_round == first:
            _log_evaluated_on(ctx, evaluations)
        federated = strategy.aggregate_evaluate(server_round, evaluations)
        train_loss = fit.train_loss.result()
        if train_loss is not None:
            federated["train_loss"] = train_loss
        central = strategy.evaluate(server_round, weights)
        if central is not None:
            federated["server_loss"] = central[0]
            federated.update({f"server_{name}": value for name, value in central[1].items()})
        per_client = client_metrics(evaluations)
        for name, metrics in fit.per_client.items():
            per_client.setdefault(name, {}).update(metrics)
        ctx.record_round(server_round, federated=federated, per_client=per_client)
        best.update(server_round, federated, weights)
        ctx.checkpoint(
            server_round,
            arrays={
                **{_GLOBAL + k: v for k, v in weights.items()},
                **{_BEST + k: v for k, v in best.arrays.items()},
                **{_STRATEGY + k: v for k, v in strategy_state.items()},
            },
            meta={**best.meta(), _SPENT: spent, _STATE: state},
        )

    def prepare(server_round: int) -> tuple[np.random.Generator, dict[str, Any], list[Participant]]:
        # Seeded by round, not carried over, so a resumed session samples as it would have.
        rng = np.random.default_rng([plan.seed, server_round])
        fit_meta = {
            "round": server_round,
            **plan.fit_meta,
            # Clients under DP plan their budget for the whole session from it.
            "num_rounds": num_rounds,
            **strategy.fit_config(server_round),
        }
        return rng, fit_meta, strategy.configure_fit(server_round, participants, rng)

    # Evaluations ride on the next round's fit (fedsilo.workflows.deferred) when they can.
    fold = plan.fit_evaluates and secure is None and plan.privacy is None
    deferred: DeferredEvaluation | None = None
    upcoming = prepare(first) if first <= num_rounds else None
    for server_round in range(first, num_rounds + 1):
        assert upcoming is not None  # prepared by the round before
        rng, fit_meta, sampled = upcoming
        fit = _FitLog(plan.train_weight_key, private=plan.privacy is not None)
        if secure is not None:
            weights = _secure_fit(ctx, strategy, secure, sampled, weights, fit_meta, fit)
        else:
            fit_spec = ReplySpec.like(weights, counts=FIT_COUNTS)
            if deferred is not None:
                fit_meta = {**fit_meta, EVALUATE_KEY: deferred.meta}
            group = ctx.send(
                [
                    Task(
                        to=p,
                        kind="fit",
                        meta=fit_meta,
                        arrays=weights,
                        round=server_round,
                        expect=fit_spec,
                    )
                    for p in sampled
                ]
            )
            replies: Iterable[Reply] = stream(
                ctx, group, params.accept_failures, params.min_fit_clients
            )
            if deferred is not None:
                replies = deferred.collect(ctx, replies, EVALUATE_SPEC, params.accept_failures)
            weights = strategy.aggregate_fit(server_round, weights, fit.watch(replies))
        if deferred is not None:
            evaluations = deferred.check(ctx, params.min_eval_clients)
            finish(
                deferred.round, deferred.weights, evaluations, deferred.fit, deferred.strategy_state
            )
            deferred = None
        _check_finite(server_round, weights)
        spent.update(fit.spent)

        eval_meta = {"round": server_round, **strategy.evaluate_config(server_round)}
        evaluators = strategy.configure_evaluate(server_round, participants, rng)
        upcoming = prepare(server_round + 1) if server_round < num_rounds else None
        if fold and evaluators and upcoming is not None and _same(evaluators, upcoming[2]):
            deferred = DeferredEvaluation(
                server_round, weights, eval_meta, evaluators, strategy.state_arrays(), fit
            )
            continue
        group = ctx.send(
            [
                Task(
                    to=p,
                    kind="evaluate",
                    meta=eval_meta,
                    arrays=weights,
                    round=server_round,
                    expect=EVALUATE_SPEC,
                )
                for p in evaluators
            ]
        )
        evaluations = list(stream(ctx, group, params.accept_failures, params.min_eval_clients))
        finish(server_round, weights, evaluations, fit, strategy.state_arrays())

    chosen, metrics, selected_by = best.selected(num_rounds)
    arrays = best.arrays if best.best_round is not None else weights
    meta: dict[str, Any] = {
        **plan.model_meta,
        **state,
        "round": chosen,
        "rounds": best.last_round or num_rounds,
        "federated_loss": metrics.get("loss"),
        "selected_by": selected_by,
        "federated_metrics": dict(metrics),
    }
    if plan.privacy is not None:
        # Every round was released, whichever one is saved: the spending is the final one.
        meta["privacy"] = {
            "epsilon": plan.privacy.epsilon,
            "max_grad_norm": plan.privacy.max_grad_norm,
            "epsilon_spent": spent,
        }
    ctx.save_model(arrays, meta=meta, round=chosen)
    return RoundsResult(arrays, meta, chosen)


class _FitLog:
    """Taps the fit replies on their way to the strategy: train losses, DP spending."""

    def __init__(self, weight_key: str, private: bool) -> None:
        self.private = private
        self.train_loss = WeightedMean("train_loss", weight_key)
        self.per_client: dict[str, dict[str, float]] = {}
        self.spent: dict[str, float] = {}

    def watch(self, replies: Iterable[Reply]) -> Iterator[Reply]:
        for reply in replies:
            self.train_loss.add(reply)
            self.note(reply.participant.client_name, reply.meta)
            yield reply

    def note(self, name: str, meta: Mapping[str, Any]) -> None:
        """One client's fit meta: its train loss and (under DP) its spending."""
        metrics: dict[str, float] = {}
        loss = finite_number(meta, "train_loss")
        if loss is not None:
            metrics["train_loss"] = loss
        # A client's own fit metrics (the arrays package's ``fit_<name>``) are its own.
        for key in meta:
            if key.startswith(FIT_METRIC_PREFIX):
                value = finite_number(meta, key)
                if value is not None:
                    metrics[key] = value
        if self.private:
            epsilon = finite_number(meta, "epsilon_spent")
            if epsilon is None:
                raise TaskError(
                    f"The fit reply of client {name!r} carries no 'epsilon_spent', though "
                    "the session trains under differential privacy."
                )
            self.spent[name] = metrics["epsilon_spent"] = epsilon
        if metrics:
            self.per_client[name] = metrics


def _secure_spec(ctx: SessionContext) -> SecAggSpec | None:
    """The session's ``secure_aggregation`` when enabled (validated at session creation)."""
    raw = ctx.session.model_config.get("secure_aggregation")
    if raw is None:
        return None
    spec = SecAggSpec.model_validate(raw)
    return spec if spec.enabled else None


#: the participant the strategy sees a secure round's one aggregate result from
_AGGREGATE = Participant(
    id="secure-aggregate",
    client_name="secure aggregate",
    dataset=DatasetSummary(train_rows=0, test_rows=0, columns=[]),
)


def _secure_fit(
    ctx: SessionContext,
    strategy: Strategy,
    spec: SecAggSpec,
    chosen: Sequence[Participant],
    weights: Arrays,
    fit_meta: Mapping[str, Any],
    fit: _FitLog,
) -> Arrays:
    """The next global model from one secure aggregation of the round's fit."""
    server_round = int(fit_meta["round"])
    result = secure_mean(
        ctx,
        chosen,
        weights,
        fit_meta,
        spec,
        round=server_round,
        weighting="unit" if isinstance(strategy, UnweightedAverage) else "num_examples",
        accept_failures=strategy.params.accept_failures,
        min_replies=strategy.params.min_fit_clients,
    )
    for name, meta in result.clear.items():
        fit.note(name, meta)
    # The strategy aggregates one result: the mean, weighing the total (a mean of one is
    # itself for FedAvg and iter_avg; the server optimizers step from it).
    aggregate = Reply(
        _AGGREGATE,
        {"num_examples": result.weight},
        result.arrays,
        kind="fit",
        round=server_round,
    )
    return strategy.aggregate_fit(server_round, weights, [aggregate])


def _same(a: Sequence[Participant], b: Sequence[Participant]) -> bool:
    return sorted(p.id for p in a) == sorted(p.id for p in b)


def _check_finite(server_round: int, weights: Arrays) -> None:
    bad = sorted(name for name, a in weights.items() if not np.all(np.isfinite(a)))
    if bad:
        raise TaskError(
            f"Round {server_round} produced non-finite weights in {bad}: local training "
            "diverged. Lower optimizer.params.learning_rate."
        )


_EVALUATED_ON = {
    "train": "clients without a test set report metrics on their training data",
    "none": "clients under differential privacy without a test set report no metrics",
}


def _log_evaluated_on(ctx: SessionContext, replies: Sequence[Reply]) -> None:
    for where, message in _EVALUATED_ON.items():
        names = sorted(
            r.participant.client_name for r in replies if r.meta.get("evaluated_on") == where
        )
        if names:
            ctx.log(f"{message}: {', '.join(names)}")


def _with_prefix(arrays: Arrays, prefix: str) -> Arrays:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
