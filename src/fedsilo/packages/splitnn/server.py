"""The server half of splitnn: hand each party its aligned rows, then let them train.

The server orchestrates and relays; it holds no part of the network and never reads an
embedding or a gradient (they travel sealed over the fast exchange, in memory).

1. The PRL session's :class:`~fedsilo.vfl.alignment.Alignment` is read
   (``ctx.load_model(prl_session_id)``); a prediction session also reads its training
   session's record (the network's configs; the weights stay at the parties).
2. ``vfl_prepare`` to every party: the keyed digests of its tables' id columns, compared
   with the PRL session's (a party bringing another table is refused, naming it), and its
   batch size. The label client's batch size is everyone's: the parties must cut the same
   batches.
3. Training: one ``vfl_train`` task per party and round, carrying that party's aligned row
   positions (its own only) and who its peers are; the active party's reply holds the
   round's metrics, recorded in the seed's shape (federated ``loss``, the active party's
   ``test_*``). The round number is checkpointed after each round; a resumed session
   (server restart) continues with the next round, and each party restores its parts of
   the last completed round from its storage path. The saved "model" is a record of the
   training -- configs and rounds, no weights.
   Prediction: one ``vfl_predict`` task per party on the PRL session's test alignment; the
   active party writes the predictions at its storage path and reports their count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedsilo.errors import DataError, TaskError
from fedsilo.federation import Participant, Reply, SessionContext, Task
from fedsilo.packages.splitnn.client import PREDICT, PREPARE, TRAIN
from fedsilo.packages.splitnn.config import SplitnnDataConfig, SplitnnModelConfig
from fedsilo.vfl.alignment import Alignment

__all__ = ["PREDICTIONS_ARTIFACT", "TRAINING_ARTIFACT", "run"]

TRAINING_ARTIFACT = "splitnn_training"
#: attempts of one round (or of a prediction) before the session fails
MAX_ATTEMPTS = 3
PREDICTIONS_ARTIFACT = "splitnn_predictions"


def run(
    ctx: SessionContext, model_config: SplitnnModelConfig, data_config: SplitnnDataConfig
) -> None:
    """Train or predict with a split network (see the module docstring).

    Raises
    ------
    TaskError
        When the PRL (or training) session saved no usable record, a party not named in the
        data_config joined, a party's tables differ from those linked, or a task fails.
    """
    alignment = _alignment(ctx, model_config.prl_session_id)
    names = list(data_config.clients)
    unaligned = sorted(set(names) - set(alignment.clients))
    if unaligned:
        raise TaskError(
            f"clients {unaligned} of the data_config took no part in PRL session "
            f"{model_config.prl_session_id} (it linked {sorted(alignment.clients)})"
        )
    trained_raw = ctx.session.model_config
    data_raw = ctx.session.data_config
    if model_config.vfl_mode == "predict":
        trained_raw, data_raw = _training_record(ctx, model_config, data_config)
    joined = ctx.wait_for_clients(max(ctx.session.min_num_clients, len(names)))
    clients = _in_config_order(joined, names)
    tables = ["train", "test"] if model_config.vfl_mode == "train" else ["test"]
    prepared = _prepare(ctx, clients, alignment, model_config.prl_session_id, tables)
    label = data_config.label_client
    batch_size = int(prepared[label]["batch_size"])
    ctx.log(
        f"{len(clients)} parties, label client {label!r}, batch size {batch_size}; aligned "
        + ", ".join(f"{t} {len(alignment.positions(label, t))}" for t in tables)
    )
    base = {
        "peers": {p.client_name: p.id for p in clients},
        "label_client": label,
        "data_config": data_raw,
        "batch_size": batch_size,
    }
    if model_config.vfl_mode == "train":
        _train(ctx, model_config, clients, alignment, base)
    else:
        _predict(ctx, model_config, clients, alignment, {**base, "model_config": trained_raw})


def _alignment(ctx: SessionContext, prl_session_id: str) -> Alignment:
    saved = ctx.load_model(prl_session_id)
    if saved is None:
        raise TaskError(
            f"PRL session {prl_session_id} saved no alignment: pass the id of a completed PRL "
            "session"
        )
    arrays, header = saved
    try:
        return Alignment.from_payload(header.get("meta", {}), arrays)
    except (ValueError, KeyError) as exc:
        raise TaskError(f"session {prl_session_id}: {exc}") from exc


def _training_record(
    ctx: SessionContext, model_config: SplitnnModelConfig, data_config: SplitnnDataConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training session's raw model_config and data_config, checked against ours."""
    training_id = str(model_config.training_session_id)
    saved = ctx.load_model(training_id)
    header = saved[1] if saved is not None else {}
    if header.get("meta", {}).get("artifact") != TRAINING_ARTIFACT:
        raise TaskError(
            f"session {training_id} is not a completed VFL training session: pass the id of "
            "one as training_session_id"
        )
    trained = SplitnnDataConfig.model_validate(header["data_config"])
    if trained.clients != data_config.clients:
        raise TaskError(
            f"the data_config differs from training session {training_id}'s: predict with the "
            "clients, predictors and label client it trained with"
        )
    return dict(header["model_config"]), dict(header["data_config"])


def _in_config_order(joined: Sequence[Participant], names: list[str]) -> list[Participant]:
    by_name = {p.client_name: p for p in joined}
    unknown = sorted(set(by_name) - set(names))
    missing = [n for n in names if n not in by_name]
    if unknown or missing:
        raise TaskError(
            f"the VFL session's clients are {names}; joined: {sorted(by_name)}"
            + (f" (not in the data_config: {unknown})" if unknown else "")
            + (f" (missing: {missing})" if missing else "")
        )
    return [by_name[n] for n in names]


def _prepare(
    ctx: SessionContext,
    clients: list[Participant],
    alignment: Alignment,
    prl_session_id: str,
    tables: list[str],
) -> dict[str, Mapping[str, Any]]:
    tasks = [
        Task(
            to=p,
            kind=PREPARE,
            meta={
                "prl_session_id": prl_session_id,
                "id_columns": alignment.clients[p.client_name].id_columns,
            },
        )
        for p in clients
    ]
    replies: dict[str, Mapping[str, Any]] = {
        r.participant.client_name: r.meta for r in ctx.send(tasks).wait()
    }
    for name, meta in replies.items():
        for table in tables:
            try:
                alignment.check_digest(name, table, str(meta.get("digests", {}).get(table)))
            except DataError as exc:
                raise TaskError(f"client {name!r} refused: {'; '.join(exc.problems)}") from exc
    return replies


def _positions(alignment: Alignment, name: str, tables: list[str]) -> dict[str, np.ndarray]:
    return {t: np.asarray(alignment.positions(name, t), dtype=np.int64) for t in tables}


def _label_reply(replies: list[Reply], label: str) -> Mapping[str, Any]:
    for reply in replies:
        if reply.participant.client_name == label:
            return reply.meta
    raise TaskError(f"no reply from the label client {label!r}")


def _attempts(
    ctx: SessionContext, tasks: Callable[[int], list[Task]], what: str, n_clients: int
) -> list[Reply]:
    """Every party's reply to one attempt of ``what``; when a party fails (its client
    died, restarted, or was offline), the others' tasks are withdrawn and the whole round
    is resent to everyone with a new attempt stamp, up to :data:`MAX_ATTEMPTS` times.

    The stamp (nanoseconds of the server's clock) keeps an attempt's peer messages apart
    from another's; a party still serving a withdrawn attempt abandons it when a peer's
    message of the new one reaches it (:mod:`~fedsilo.packages.splitnn.channel`).
    """
    for number in range(1, MAX_ATTEMPTS + 1):
        group = ctx.send(tasks(time.time_ns()))
        replies: list[Reply] = []
        failed = None
        for outcome in group.outcomes():
            if isinstance(outcome, Reply):
                replies.append(outcome)
            else:
                failed = outcome
                break
        if failed is None:
            return replies
        group.cancel(f"{what} is resent after a party failed")
        if number == MAX_ATTEMPTS:
            raise TaskError(f"{what} failed {MAX_ATTEMPTS} times; the last time: {failed}")
        ctx.log(f"{what}: attempt {number} failed ({failed}); resending it to every party")
        ctx.wait_for_clients(n_clients)
    raise AssertionError("unreachable")


def _train(
    ctx: SessionContext,
    model_config: SplitnnModelConfig,
    clients: list[Participant],
    alignment: Alignment,
    base: dict[str, Any],
) -> None:
    label = str(base["label_client"])
    restored = ctx.restore()
    start = restored.round + 1 if restored is not None else 1
    positions = {
        p.client_name: _positions(alignment, p.client_name, ["train", "test"]) for p in clients
    }
    for server_round in range(start, ctx.session.num_rounds + 1):

        def tasks(attempt: int, server_round: int = server_round) -> list[Task]:
            return [
                Task(
                    to=p,
                    kind=TRAIN,
                    meta={**base, "round": server_round, "attempt": attempt},
                    arrays=positions[p.client_name],
                    round=server_round,
                )
                for p in clients
            ]

        replies = _attempts(ctx, tasks, f"round {server_round}", len(clients))
        metrics = {
            k: float(v) for k, v in dict(_label_reply(replies, label).get("metrics", {})).items()
        }
        test = {k: v for k, v in metrics.items() if k.startswith("test_")}
        ctx.record_round(
            server_round,
            federated={"loss": test.get("test_loss", float("nan"))},
            per_client={label: test},
        )
        ctx.checkpoint(server_round, {}, {"round": server_round})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        ctx.log(f"round {server_round}: {shown}")
    meta = {
        "artifact": TRAINING_ARTIFACT,
        "prl_session_id": model_config.prl_session_id,
        "label_client": label,
        "clients": [p.client_name for p in clients],
        "rounds": ctx.session.num_rounds,
        "where": "each party's part is at its own --storage-path; the server holds none",
    }
    ctx.save_model({}, meta, ctx.session.num_rounds)


def _predict(
    ctx: SessionContext,
    model_config: SplitnnModelConfig,
    clients: list[Participant],
    alignment: Alignment,
    base: dict[str, Any],
) -> None:
    label = str(base["label_client"])

    def tasks(attempt: int) -> list[Task]:
        return [
            Task(
                to=p,
                kind=PREDICT,
                meta={
                    **base,
                    "training_session_id": model_config.training_session_id,
                    "id_columns": alignment.clients[p.client_name].id_columns,
                    "attempt": attempt,
                },
                arrays=_positions(alignment, p.client_name, ["test"]),
                round=1,
            )
            for p in clients
        ]

    replies = _attempts(ctx, tasks, "prediction", len(clients))
    count = float(_label_reply(replies, label).get("n_predictions", 0))
    ctx.record_round(1, federated={}, per_client={label: {"n_predictions": count}})
    meta = {
        "artifact": PREDICTIONS_ARTIFACT,
        "training_session_id": model_config.training_session_id,
        "prl_session_id": model_config.prl_session_id,
        "label_client": label,
        "n_predictions": int(count),
        "where": "the predictions are at the label client's --storage-path; the server holds none",
    }
    ctx.save_model({}, meta, 1)
