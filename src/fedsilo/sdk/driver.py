"""Drive a session from your own process: your strategy, your server-side evaluation.

``Session.run(strategy, num_rounds)`` runs Flower's server loop in the notebook against a
session of package ``arrays`` created with ``model_config={"driver": True}``: each round the
strategy samples the participants, the driver sends them ``fit`` tasks through the REST API
(:mod:`fedsilo.server.api.driver`), aggregates their arrays here, has them ``evaluate``,
evaluates the global model with the strategy's ``evaluate_fn`` on data only this process
holds, and records the round's metrics on the server; at the end the final arrays become the
session's model and the session completes. The server only relays tasks and replies (screened
like any workflow's) and stores what the driver records.

::

    strategy = fedsilo.strategies.FedAvg(
        FedAvgParams(), evaluate_fn=evaluate_on_my_test_set, on_fit_config_fn=fit_round
    )
    history = session.run(strategy=strategy, num_rounds=3)

``evaluate_fn(server_round, arrays, config)`` receives the named arrays (``"0"``, ``"1"``,
... for clients that exchange lists; :func:`fedsilo.packages.arrays.client.to_parameters`
turns them back into the list) and returns ``(loss, metrics)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsilo.errors import ConfigError, ConflictError, TaskError
from fedsilo.federation import Participant, Reply
from fedsilo.wire import Arrays, ParticipantPublic, decode_frame, encode_frame

if TYPE_CHECKING:
    from fedsilo.http import ApiClient
    from fedsilo.strategies import Strategy

__all__ = ["DriverHistory", "run_driver"]


@dataclass
class DriverHistory:
    """What a driven session produced.

    Attributes
    ----------
    arrays : dict of str to ndarray
        The final global model (also the session's model).
    federated : list of dict
        Per round: the pooled client metrics, ``train_loss`` and ``server_loss`` /
        ``server_<name>`` from ``evaluate_fn``.
    per_client : list of dict
        Per round: client name -> its metrics.
    """

    arrays: Arrays
    federated: list[dict[str, float]] = field(default_factory=list)
    per_client: list[dict[str, dict[str, float]]] = field(default_factory=list)


def run_driver(
    api: ApiClient,
    session_id: str,
    strategy: Strategy,
    num_rounds: int,
    *,
    min_num_clients: int,
    seed: int = 23,
    timeout: float = 600.0,
) -> DriverHistory:
    """Run ``num_rounds`` rounds of ``strategy`` over the session's participants.

    Raises
    ------
    ConfigError
        ``num_rounds`` below 1.
    TaskError
        The clients did not join within ``timeout``, or a round got too few replies.
    """
    if num_rounds < 1:
        raise ConfigError(f"num_rounds must be >= 1. Got {num_rounds}.")
    path = f"/sessions/{session_id}"
    participants = _wait_for_clients(api, path, min_num_clients, timeout)
    driver = _Driver(api, path, participants, timeout)
    given = strategy.params.initial_parameters
    template = driver.ask("init", {}, {}, participants[:1], 0)[0].arrays
    weights = strategy.initial_arrays(template) if given is not None else template
    history = DriverHistory(arrays=weights)
    params = strategy.params
    for server_round in range(1, num_rounds + 1):
        rng = np.random.default_rng([seed, server_round])
        fit_meta = {
            "round": server_round,
            "num_rounds": num_rounds,
            **strategy.fit_config(server_round),
        }
        sampled = strategy.configure_fit(server_round, participants, rng)
        fits = driver.ask("fit", fit_meta, weights, sampled, server_round, params.min_fit_clients)
        weights = strategy.aggregate_fit(server_round, weights, fits)
        eval_meta = {"round": server_round, **strategy.evaluate_config(server_round)}
        chosen = strategy.configure_evaluate(server_round, participants, rng)
        evaluations = driver.ask(
            "evaluate", eval_meta, weights, chosen, server_round, params.min_eval_clients
        )
        federated = strategy.aggregate_evaluate(server_round, evaluations)
        losses = [
            (float(r.meta["train_loss"]), float(r.meta["num_examples"]))
            for r in fits
            if isinstance(r.meta.get("train_loss"), int | float)
        ]
        if losses and sum(w for _, w in losses) > 0:
            federated["train_loss"] = sum(v * w for v, w in losses) / sum(w for _, w in losses)
        central = strategy.evaluate(server_round, weights)
        if central is not None:
            federated["server_loss"] = float(central[0])
            federated.update({f"server_{k}": float(v) for k, v in central[1].items()})
        per_client = _client_metrics(fits, evaluations)
        api.post_json(
            f"{path}/driver/rounds",
            {"round": server_round, "federated": federated, "per_client": per_client},
        )
        history.federated.append(federated)
        history.per_client.append(per_client)
    history.arrays = weights
    frame = encode_frame(
        weights,
        {
            "meta": {"rounds": num_rounds, "federated_metrics": history.federated[-1]},
            "round": num_rounds,
        },
    )
    api.request("POST", f"{path}/driver/finish", content=frame)
    return history


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _client_metrics(
    fits: Sequence[Reply], evaluations: Sequence[Reply]
) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for reply in evaluations:
        result.setdefault(reply.participant.client_name, {}).update(
            {k: float(v) for k, v in reply.meta.items() if k.startswith("test_") and _number(v)}
        )
    for reply in fits:
        result.setdefault(reply.participant.client_name, {}).update(
            {
                k: float(v)
                for k, v in reply.meta.items()
                if (k.startswith("fit_") or k == "train_loss") and _number(v)
            }
        )
    return result


def _wait_for_clients(api: ApiClient, path: str, count: int, timeout: float) -> list[Participant]:
    deadline = time.monotonic() + timeout
    while True:
        joined = [ParticipantPublic.model_validate(p) for p in api.get_json(f"{path}/participants")]
        status = api.get_json(path)["status"]
        if len(joined) >= count and status == "running":
            try:
                api.request("GET", f"{path}/driver/tasks/0/replies", ok=(200, 404))
            except ConflictError:  # until the workflow opened its inbox
                pass
            else:
                return [
                    Participant(
                        id=p.id,
                        client_name=p.client_name,
                        dataset=p.dataset,
                    )
                    for p in joined
                ]
        if status in ("completed", "failed", "canceled"):
            raise TaskError(f"Cannot drive session {path.rsplit('/', 1)[-1]}: it is {status}.")
        if time.monotonic() > deadline:
            raise TaskError(f"Only {len(joined)} of {count} clients joined within {timeout:g} s.")
        time.sleep(0.3)


class _Driver:
    def __init__(
        self, api: ApiClient, path: str, participants: list[Participant], timeout: float
    ) -> None:
        self.api = api
        self.path = path
        self.by_name = {p.client_name: p for p in participants}
        self.timeout = timeout

    def ask(
        self,
        kind: str,
        meta: dict[str, Any],
        arrays: Arrays,
        to: Sequence[Participant],
        server_round: int,
        min_replies: int = 1,
    ) -> list[Reply]:
        header = {
            "kind": kind,
            "meta": meta,
            "to": [p.client_name for p in to],
            "round": server_round,
            "timeout": self.timeout,
        }
        sent = self.api.request(
            "POST", f"{self.path}/driver/tasks", content=encode_frame(arrays, header)
        ).json()
        response = self.api.request(
            "GET", f"{self.path}/driver/tasks/{sent['group']}/replies", timeout=self.timeout + 30
        )
        got, body = decode_frame(response.content)
        replies = []
        for index, entry in enumerate(body["replies"]):
            prefix = f"{index}/"
            named = {k[len(prefix) :]: v for k, v in got.items() if k.startswith(prefix)}
            replies.append(
                Reply(
                    self.by_name[entry["client_name"]],
                    entry["meta"],
                    named,
                    kind=kind,
                    round=server_round,
                )
            )
        if len(replies) < max(min_replies, 1):
            raise TaskError(
                f"round {server_round}: task {kind!r} got {len(replies)} replies; at least "
                f"{max(min_replies, 1)} needed ({'; '.join(body['failures'])})"
            )
        return replies
