"""The server half of ffnet: the federated training workflow.

Each round the strategy samples clients, they ``fit`` from the global weights, the strategy
aggregates their models (streaming, one accumulator per array), a sample of clients
``evaluate`` the new global model, and the round's metrics and a checkpoint are persisted.
After the last round the best (per ``save_best_model``) or the last model is saved.

Federated metrics (``ctx.record_round``), from the evaluate replies:

* ``loss`` -- test-example-weighted mean of the clients' ``test_loss``: exactly the pooled
  mean loss over all their test rows;
* ``accuracy`` -- likewise weighted, so exactly the pooled accuracy;
* ``roc_auc_client_mean`` -- test-example-weighted mean of the clients' AUCs. This is *not*
  the AUC of the pooled test rows (an AUC ranks all scores together, which would need the
  scores themselves), hence the name. ``save_best_model.metric = "roc_auc"`` selects on it;
* ``r2`` -- the pooled R^2, exact: clients send their test target's mean and sum of squared
  deviations, which combine (Chan et al.) into the pooled total sum of squares;
* ``train_loss`` -- example-weighted mean of the fit replies' ``train_loss`` (absent under
  differential privacy, where clients do not release it).

Under ``differential_privacy_params`` each fitting client's per-client metrics carry
``epsilon_spent`` (its budget used after the round), and the saved model's meta a
``privacy`` entry with the budget and every client's final ``epsilon_spent``.

Checkpoint arrays are named ``global/<param>``, ``best/<param>`` and ``strategy/<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Reply, SessionContext
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig, check_consistency
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.packages.metrics import R2Part, finite_number, pooled_r2, weighted_mean
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays

__all__ = ["federated_metrics", "run"]

_GLOBAL = "global/"
_BEST = "best/"
_STRATEGY = "strategy/"
#: checkpoint meta key of the clients' latest epsilon_spent (DP sessions)
_SPENT = "epsilon_spent"
#: save_best_model metric name -> federated metric key
_SELECTION_KEYS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "roc_auc": "roc_auc_client_mean",
    "r2": "r2",
}


def run(ctx: SessionContext, mc: FFNetModelConfig, dc: FFNetDataConfig) -> None:
    """Train an ffnet model over the session's clients; see the module docstring.

    Parameters
    ----------
    ctx : SessionContext
        The engine's handle on the session (clients, persistence).
    mc : FFNetModelConfig
    dc : FFNetDataConfig

    Raises
    ------
    ConfigError
        When the configs disagree (checked before any client is asked anything).
    TaskError
        When a round cannot go on (too many failed clients, malformed replies).
    """
    check_consistency(mc, dc)
    strategy = get_strategy(mc.strategy.name, mc.strategy.params)
    params = strategy.params
    # Checked before waiting, so a bad initial_parameters fails the session at once.
    initial = strategy.initial_arrays(module_arrays(build_module(mc)))
    needed = max(
        ctx.session.min_num_clients,
        params.min_available_clients,
        params.min_fit_clients,
        params.min_eval_clients,
    )
    if needed > ctx.session.min_num_clients:
        ctx.log(f"waiting for {needed} clients, as the strategy parameters require")
    participants = ctx.wait_for_clients(needed)
    tracker = _BestTracker(mc)
    private = mc.differential_privacy_params is not None
    spent: dict[str, float] = {}  # each client's latest epsilon_spent (DP only)

    checkpoint = ctx.restore()
    if checkpoint is not None:
        weights = _with_prefix(checkpoint.arrays, _GLOBAL)
        if not weights:
            raise TaskError(
                f"The checkpoint of round {checkpoint.round} holds no 'global/' arrays; "
                "it was not written by the ffnet workflow."
            )
        strategy.load_state_arrays(_with_prefix(checkpoint.arrays, _STRATEGY))
        tracker.restore(checkpoint.meta, _with_prefix(checkpoint.arrays, _BEST))
        spent = dict(checkpoint.meta.get(_SPENT) or {})
        start = checkpoint.round + 1
    else:
        weights = initial
        start = 1

    for rnd in range(start, ctx.session.num_rounds + 1):
        # Seeded by round, not carried over, so a resumed session samples as it would have.
        rng = np.random.default_rng([mc.seed, rnd])
        fit_replies = ctx.ask(
            strategy.configure_fit(rnd, participants, rng),
            "fit",
            arrays=weights,
            meta={
                "round": rnd,
                "local_epochs": mc.local_epochs,
                # Clients under DP plan their budget for the whole session from it.
                "num_rounds": ctx.session.num_rounds,
                **strategy.fit_config(rnd),
            },
            round=rnd,
            accept_failures=params.accept_failures,
            min_replies=params.min_fit_clients,
        )
        train_losses = {
            r.participant.client_name: finite_number(r.meta, "train_loss") for r in fit_replies
        }
        train_loss = weighted_mean(fit_replies, "train_loss", "num_examples")
        round_spent = _epsilons_spent(fit_replies) if private else {}
        spent.update(round_spent)
        weights = strategy.aggregate_fit(rnd, weights, fit_replies)
        del fit_replies  # the clients' models: let them go before evaluation

        eval_replies = ctx.ask(
            strategy.configure_evaluate(rnd, participants, rng),
            "evaluate",
            arrays=weights,
            meta={"round": rnd, **strategy.evaluate_config(rnd)},
            round=rnd,
            accept_failures=params.accept_failures,
            min_replies=params.min_eval_clients,
        )
        if rnd == start:
            _log_train_evaluations(ctx, eval_replies)
        federated = federated_metrics(mc, eval_replies)
        if train_loss is not None:
            federated["train_loss"] = train_loss
        per_client = _per_client(eval_replies, train_losses)
        for name, epsilon in round_spent.items():
            per_client.setdefault(name, {})["epsilon_spent"] = epsilon
        ctx.record_round(rnd, federated=federated, per_client=per_client)
        tracker.update(rnd, federated, weights)
        ctx.checkpoint(
            rnd,
            arrays={
                **{_GLOBAL + k: v for k, v in weights.items()},
                **{_BEST + k: v for k, v in tracker.weights.items()},
                **{_STRATEGY + k: v for k, v in strategy.state_arrays().items()},
            },
            meta={**tracker.meta(), **({_SPENT: spent} if private else {})},
        )

    privacy = None
    if mc.differential_privacy_params is not None:
        privacy = {
            "epsilon": mc.differential_privacy_params.epsilon,
            "max_grad_norm": mc.differential_privacy_params.max_grad_norm,
            "epsilon_spent": spent,
        }
    _save(ctx, tracker, weights, ctx.session.num_rounds, privacy)


def _epsilons_spent(replies: Sequence[Reply]) -> dict[str, float]:
    """Each replying client's ``epsilon_spent``; a reply without one fails the round."""
    result: dict[str, float] = {}
    for reply in replies:
        value = finite_number(reply.meta, "epsilon_spent")
        if value is None:
            raise TaskError(
                f"The fit reply of client {reply.participant.client_name!r} carries no "
                "'epsilon_spent', though the session trains under differential privacy."
            )
        result[reply.participant.client_name] = value
    return result


def _save(
    ctx: SessionContext,
    tracker: _BestTracker,
    last: Arrays,
    num_rounds: int,
    privacy: dict[str, Any] | None = None,
) -> None:
    if tracker.best_round is not None:
        arrays, rnd, metrics = tracker.weights, tracker.best_round, tracker.best_metrics
        selected_by = f"best {tracker.metric} ({tracker.mode})"
    else:
        arrays, rnd, metrics = last, tracker.last_round or num_rounds, tracker.last_metrics
        selected_by = "last round"
    meta: dict[str, Any] = {
        "round": rnd,
        "federated_loss": metrics.get("loss"),
        "selected_by": selected_by,
        "federated_metrics": dict(metrics),
    }
    if privacy is not None:
        # Every round was released, whichever one is saved: the spending is the final one.
        meta["privacy"] = privacy
    ctx.save_model(arrays, meta=meta, round=rnd)


class _BestTracker:
    """Follows ``save_best_model`` across rounds; survives restarts through checkpoint meta."""

    def __init__(self, mc: FFNetModelConfig) -> None:
        best = mc.save_best_model
        self.metric = best.metric if best is not None else None
        self.mode = best.resolved_mode() if best is not None else "min"
        self.key = _SELECTION_KEYS.get(self.metric or "")
        self.best_round: int | None = None
        self.best_value: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.weights: Arrays = {}
        self.last_round: int | None = None
        self.last_metrics: dict[str, float] = {}

    def update(self, rnd: int, federated: Mapping[str, float], weights: Arrays) -> None:
        self.last_round, self.last_metrics = rnd, dict(federated)
        if self.key is None:
            return
        value = federated.get(self.key)
        if value is None or not math.isfinite(value):
            return  # an undefined metric never wins
        better = self.best_value is None or (
            value < self.best_value if self.mode == "min" else value > self.best_value
        )
        if better:
            self.best_round, self.best_value = rnd, value
            self.best_metrics = dict(federated)
            self.weights = {k: v.copy() for k, v in weights.items()}

    def meta(self) -> dict[str, Any]:
        return {
            "best_round": self.best_round,
            "best_value": self.best_value,
            "best_metrics": self.best_metrics,
            "selected_by_metric": self.metric,
            "mode": self.mode,
            "last_round": self.last_round,
            "last_metrics": self.last_metrics,
        }

    def restore(self, meta: Mapping[str, Any], weights: Arrays) -> None:
        self.best_round = meta.get("best_round")
        self.best_value = meta.get("best_value")
        self.best_metrics = dict(meta.get("best_metrics") or {})
        self.last_round = meta.get("last_round")
        self.last_metrics = dict(meta.get("last_metrics") or {})
        self.weights = weights
        if self.best_round is not None and not weights:
            raise TaskError(
                f"The checkpoint names round {self.best_round} as the best model but holds "
                "no 'best/' arrays; it is incomplete."
            )


# ----------------------------------------------------------------------- metrics


def federated_metrics(mc: FFNetModelConfig, replies: Sequence[Reply]) -> dict[str, float]:
    """The round's federated metrics from the clients' evaluate replies.

    Parameters
    ----------
    mc : FFNetModelConfig
    replies : sequence of Reply
        Evaluate replies (meta as :meth:`FFNetExecutor.evaluate` returns it).

    Returns
    -------
    dict of str to float
        ``loss`` and, as reported, ``accuracy`` and ``roc_auc_client_mean``
        (classification) or ``r2`` (regression); see the module docstring. Undefined
        metrics are left out rather than sent as NaN.
    """
    result: dict[str, float] = {}
    for key, client_key in (
        ("loss", "test_loss"),
        ("accuracy", "test_accuracy"),
        ("roc_auc_client_mean", "test_roc_auc"),
    ):
        value = weighted_mean(replies, client_key, "test_num_examples")
        if value is not None:
            result[key] = value
    if mc.ml_task.type == "regression" and "r2" in mc.reported_metrics():
        r2 = _pooled_r2(replies)
        if r2 is not None:
            result["r2"] = r2
    return result


def _pooled_r2(replies: Sequence[Reply]) -> float | None:
    """The exact pooled R^2 from each client's test count, MSE, target mean and M2."""
    parts: list[R2Part] = []
    for reply in replies:
        n = finite_number(reply.meta, "test_num_examples")
        mse = finite_number(reply.meta, "test_loss")
        mean = finite_number(reply.meta, "target_mean")
        m2 = finite_number(reply.meta, "target_m2")
        if n is None or mse is None or mean is None or m2 is None or n <= 0:
            return None
        parts.append((n, n * mse, mean, m2))
    return pooled_r2(parts)


def _per_client(
    replies: Sequence[Reply], train_losses: Mapping[str, float | None]
) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for reply in replies:
        name = reply.participant.client_name
        metrics = {
            key: number
            for key in reply.meta
            if key.startswith("test_") and (number := finite_number(reply.meta, key)) is not None
        }
        train_loss = train_losses.get(name)
        if train_loss is not None:
            metrics["train_loss"] = train_loss
        result[name] = metrics
    return result


def _log_train_evaluations(ctx: SessionContext, replies: Sequence[Reply]) -> None:
    on_train = sorted(
        r.participant.client_name for r in replies if r.meta.get("evaluated_on") == "train"
    )
    if on_train:
        ctx.log(
            f"clients without a test set report metrics on their training data: "
            f"{', '.join(on_train)}"
        )
    silent = sorted(
        r.participant.client_name for r in replies if r.meta.get("evaluated_on") == "none"
    )
    if silent:
        ctx.log(
            f"clients under differential privacy without a test set report no metrics: "
            f"{', '.join(silent)}"
        )


def _with_prefix(arrays: Arrays, prefix: str) -> Arrays:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
