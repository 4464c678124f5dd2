"""The round's fit under secure aggregation: the server learns the weighted mean, not the updates.

:func:`secure_mean` runs one SecAgg+-style aggregation (:mod:`fedsilo.privacy.secagg`) over
``ctx.send``, four tasks per client, each stage's survivors the next stage's recipients::

    A  secagg.keys     every sampled client makes a fresh mask key pair for this round and
                       answers its public half                                   -> U1
    B  secagg.shares   U1's mask public keys; each client Shamir-splits its self-mask seed
                       and its mask private key (threshold t) and answers one share record
                       per peer, each sealed to that peer's join key (the server cannot open
                       them)                                                      -> U2
    B' secagg.deliver  to each client of U2, the sealed records its peers made for it (a
                       small task of its own, so the fit task below is one shared frame and
                       not one copy of the model per client)
    C  fit             the global model and the survivors U2; the client trains, and its
                       secure_aggregation mod (fedsilo.client.secure) replaces the reply by
                       ONE masked vector: encode(w * (x - global) || w) plus its self
                       mask and the pairwise masks with U2, mod 2^k, packed to k/8 bytes a
                       value (7 with the default k = 56)                          -> U3
    D  secagg.unmask   who sent masked input (U3) and who dropped (U2 - U3); each client of
                       U3 answers the shares of the self-mask seeds of U3 and of the mask
                       keys of the dropped, never both for one client      (>= t replies)

The server then removes the masks (:class:`~fedsilo.privacy.secagg.server.ServerAggregation`)
and decodes ``[sum w_u (x_u - g) ..., sum w_u]``: the round's weighted mean update and the
total weight. The mean model is ``g + mean update``, within the quantization error
``clip_range / (2 ** quantization_bits - 2)`` per value of the plain weighted mean (for
updates inside ``[-clip_range, clip_range]``; a client reports how many values it clipped).

Fewer than ``t`` clients at any stage stop the aggregation with a :class:`TaskError` naming
the stage, the counts and every failure; a failure under ``accept_failures = false`` stops
it at once; fewer than ``min_fit_clients`` masked inputs stop it. The sealed share records
travel as arrays, which the server holds in memory and never persists; the only fit meta in
clear is :data:`CLEAR_META` (``num_examples`` and ``train_loss`` are not released).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Failure, Participant, Reply, SessionContext, Task, TaskGroup
from fedsilo.federation.expect import ArraySpec, ReplySpec
from fedsilo.privacy.secagg import SecAggError, SecAggSpec
from fedsilo.privacy.secagg.encoding import FixedPoint, decode_mean, update_length, value_bytes
from fedsilo.privacy.secagg.records import b64decode
from fedsilo.privacy.secagg.server import ServerAggregation
from fedsilo.wire import Arrays

__all__ = [
    "CLEAR_META",
    "DELIVER",
    "KEYS",
    "MASKED_ARRAY",
    "SECAGG_META",
    "SHARES",
    "SHARE_PREFIX",
    "UNMASK",
    "UNMASK_ARRAY",
    "SecureMean",
    "SecureSum",
    "Weighting",
    "clear_meta",
    "secure_mean",
    "secure_sum",
]

#: task kinds of the protocol's own stages (the client's secure_aggregation mod answers them)
KEYS = "secagg.keys"
SHARES = "secagg.shares"
DELIVER = "secagg.deliver"
UNMASK = "secagg.unmask"
#: the meta key of every secure-aggregation task (and of the fit task it masks)
SECAGG_META = "secagg"
#: the one array of a masked fit reply: the masked vector packed (uint8, ``ceil(modulus_bits /
#: 8)`` bytes a value; :func:`fedsilo.privacy.secagg.encoding.pack`)
MASKED_ARRAY = "secagg.masked"
#: ``secagg.share/<peer id>``: one sealed share record (uint8), from or to that peer
SHARE_PREFIX = "secagg.share/"
#: the unmask reply: the revealed shares as UTF-8 JSON bytes (uint8)
UNMASK_ARRAY = "secagg.unmask"
#: reply meta a client still sends in clear: its privacy spending (which the session's DP
#: bookkeeping needs and the config already implies), how many values it clipped, and for
#: statistics its row count (declared on joining anyway), the column names it resolved and
#: the scales of the DP noise it added (a public function of the budget and its columns)
CLEAR_META = ("epsilon_spent", "secagg_clipped", "num_rows", "columns", "noise_scales")

#: how a client's update is weighted: by its ``num_examples`` (FedAvg and the server
#: optimizers) or once each (``iter_avg``)
Weighting = Literal["num_examples", "unit"]

_NO_ARRAYS = ReplySpec(arrays={})
_ANY_ARRAYS = ReplySpec(arrays=None)


@dataclass(frozen=True)
class SecureMean:
    """What one secure aggregation gave the round.

    Attributes
    ----------
    arrays : dict of str to ndarray of float64
        The weighted mean model ``g + sum w_u (x_u - g) / sum w_u``, shaped like ``g``.
    weight : int
        ``sum w_u`` over the clients whose masked input was summed.
    contributors : list of Participant
        Those clients (U3), in send order.
    clear : dict of client name to dict
        Each contributor's clear fit meta (:data:`CLEAR_META` only).
    failures : list of Failure
        Every task that failed, at any stage (dropouts).
    """

    arrays: dict[str, np.ndarray]
    weight: int
    contributors: list[Participant]
    clear: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class SecureSum:
    """What one secure sum gave: the summed arrays (float64), who is in it, their clear meta."""

    arrays: dict[str, np.ndarray]
    contributors: list[Participant]
    clear: dict[str, dict[str, Any]] = field(default_factory=dict)


def clear_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a masked reply's meta that stays in clear: :data:`CLEAR_META`, and the
    evaluation of the *global* model a task may carry (``test_*``, ``evaluated_on``), which
    reaches the server in clear without secure aggregation too.

    ``columns`` keeps the column names only: an eda reply lists each column with its count
    there (for the data owner's policy, which reads it before masking), and one silo's
    count is what the secure sum hides."""
    kept = {
        k: v
        for k, v in meta.items()
        if k in CLEAR_META or k.startswith("test_") or k == "evaluated_on"
    }
    columns = kept.get("columns")
    if isinstance(columns, list):
        kept["columns"] = [c.get("name") if isinstance(c, Mapping) else c for c in columns]
    return kept


def secure_mean(
    ctx: SessionContext,
    participants: Sequence[Participant],
    current: Arrays,
    fit_meta: Mapping[str, Any],
    spec: SecAggSpec,
    *,
    round: int,
    weighting: Weighting = "num_examples",
    accept_failures: bool = True,
    min_replies: int = 1,
) -> SecureMean:
    """Run stages A-D of one secure aggregation of a fit round (see the module docstring).

    Parameters
    ----------
    ctx : SessionContext
    participants : sequence of Participant
        The round's sampled clients (at least 2).
    current : dict of str to ndarray
        The global model the clients train from (sent with the fit task).
    fit_meta : mapping
        The fit task's meta (round, local_epochs, the strategy's fit_config, ...).
    spec : SecAggSpec
    round : int
    weighting : {"num_examples", "unit"}
    accept_failures : bool
        False: any failed task stops the aggregation.
    min_replies : int
        The fewest masked inputs the round accepts (``min_fit_clients``).

    Raises
    ------
    TaskError
        Too few clients at a stage (below the threshold or ``min_replies``), a failure under
        ``accept_failures = false``, or a sum that does not decode (a tampered share).
    """
    done = _aggregate(
        ctx,
        participants,
        "fit",
        fit_meta,
        current,
        current,
        spec,
        {"weighting": weighting},
        round=round,
        accept_failures=accept_failures,
        min_replies=min_replies,
    )
    try:
        mean_update, weight = decode_mean(done.fixed, done.total, current)
    except SecAggError as exc:
        raise TaskError(f"round {round}: the secure aggregation failed: {exc}") from exc
    arrays = {
        name: np.asarray(current[name], dtype=np.float64) + mean_update[name] for name in current
    }
    return SecureMean(arrays, weight, done.contributors, done.clear, done.failures)


def secure_sum(
    ctx: SessionContext,
    participants: Sequence[Participant],
    kind: str,
    meta: Mapping[str, Any],
    arrays: Arrays,
    like: Arrays,
    spec: SecAggSpec,
    *,
    scale: float,
    round: int,
) -> SecureSum:
    """The sum over every participant of the arrays its executor answers to ``kind``, masked.

    For exact statistics (glm ``newton``'s gradient, Fisher matrix and deviance): each client
    multiplies its arrays by the public ``scale`` (e.g. one over the declared rows, so the
    values fit ``clip_range``), the server decodes their sum and divides by ``scale``. The
    error of each summed value is at most ``n * clip_range / (2 ** bits - 2) / scale``. Every
    participant must answer (``accept_failures`` false): a sum that leaves a silo out is not
    the pooled one.

    Parameters
    ----------
    kind, meta, arrays
        The task the executor answers (``meta`` gains ``"secagg"``).
    like : dict of str to ndarray
        Arrays shaped as each reply's must be (all of them are summed); values unused.
    scale : float > 0

    Raises
    ------
    TaskError
        As :func:`secure_mean`, and for any failed client.
    """
    done = _aggregate(
        ctx,
        participants,
        kind,
        meta,
        arrays,
        like,
        spec,
        {"scale": float(scale)},
        round=round,
        accept_failures=False,
        min_replies=len(participants),
    )
    try:
        means, count = decode_mean(done.fixed, done.total, like)
    except SecAggError as exc:
        raise TaskError(f"round {round}: the secure aggregation failed: {exc}") from exc
    sums = {name: value * (count / scale) for name, value in means.items()}
    return SecureSum(sums, done.contributors, done.clear)


@dataclass(frozen=True)
class _Done:
    total: np.ndarray
    fixed: FixedPoint
    contributors: list[Participant]
    clear: dict[str, dict[str, Any]]
    failures: list[Failure]


def _aggregate(
    ctx: SessionContext,
    participants: Sequence[Participant],
    kind: str,
    task_meta: Mapping[str, Any],
    task_arrays: Arrays,
    like: Arrays,
    spec: SecAggSpec,
    mode: Mapping[str, Any],
    *,
    round: int,
    accept_failures: bool,
    min_replies: int,
) -> _Done:
    """Stages A-D around one task of ``kind``; the recovered sum, still encoded."""
    run = _Run(ctx, spec, round, accept_failures)
    everyone = [p.id for p in participants]
    if len(everyone) < 2:
        raise TaskError(
            f"round {round}: secure aggregation needs at least 2 clients in the round (the "
            f"sum of one is its update); the strategy sampled {len(everyone)}."
        )

    # A: fresh mask keys for this aggregation
    # The aggregated task's kind is part of every stage's question: two aggregations of one
    # round (glm newton's target_summary and newton_stats) must not be answered from each
    # other's released replies (release-once replays a question asked before).
    meta: dict[str, Any] = {
        SECAGG_META: {"participants": everyone, "spec": spec.model_dump(), "task": kind}
    }
    u1_replies = run.stage(
        KEYS, [Task(p, KEYS, meta, round=round, expect=_NO_ARRAYS) for p in participants]
    )
    mask_keys: dict[str, str] = {}
    for reply in u1_replies:
        key = _mask_key_of(reply, run)
        if key is not None:
            mask_keys[reply.participant.id] = key
    u1 = [r.participant for r in u1_replies if r.participant.id in mask_keys]
    try:
        server = ServerAggregation(ctx.session.id, round, spec, {p.id: mask_keys[p.id] for p in u1})
    except SecAggError as exc:
        raise run.stopped(KEYS, len(u1), str(exc)) from exc
    # The threshold of the clients that answered: a strict majority of them (t > |U1| / 2)
    run.threshold = t = server.threshold

    # B: sealed shares of each client's two seeds, one record per peer
    meta = {
        SECAGG_META: {"peers": {p.id: mask_keys[p.id] for p in u1}, "threshold": t, "task": kind}
    }
    u2_replies = run.stage(
        SHARES, [Task(p, SHARES, meta, round=round, expect=_ANY_ARRAYS) for p in u1]
    )
    records: dict[str, dict[str, np.ndarray]] = {}  # recipient -> sender -> sealed record
    u2: list[Participant] = []
    for reply in u2_replies:
        sent = _shares_of(reply, [p.id for p in u1], run)
        if sent is None:
            continue
        u2.append(reply.participant)
        for recipient, record in sent.items():
            records.setdefault(recipient, {})[reply.participant.id] = record
    run.enough(SHARES, u2)

    # B': each survivor's records, sealed by their senders to it
    survivors = [p.id for p in u2]
    meta = {SECAGG_META: {"survivors": survivors, "task": kind}}
    tasks = [
        Task(
            p,
            DELIVER,
            meta,
            arrays={SHARE_PREFIX + sender: r for sender, r in records.pop(p.id, {}).items()},
            round=round,
            expect=_NO_ARRAYS,
        )
        for p in u2
    ]
    ready = [r.participant for r in run.stage(DELIVER, tasks)]
    del records, tasks
    run.enough(DELIVER, ready)

    # C: the task itself (fit, newton_stats, ...), its reply masked by the client's mod
    packed = update_length(like) * value_bytes(spec.modulus_bits)
    masked_spec = ReplySpec(arrays={MASKED_ARRAY: ArraySpec((packed,), "uint8")})
    meta = {**task_meta, SECAGG_META: {"survivors": survivors, **mode}}
    replies = run.stage(
        kind,
        [Task(p, kind, meta, arrays=task_arrays, round=round, expect=masked_spec) for p in ready],
    )
    masked = {r.participant.id: np.asarray(r.arrays[MASKED_ARRAY]) for r in replies}
    clear = {r.participant.client_name: clear_meta(r.meta) for r in replies}
    u3 = [r.participant for r in replies]
    run.enough(kind, u3, minimum=min_replies)
    del replies

    # D: the shares that remove the masks
    u3_ids = [p.id for p in u3]
    dropped = [p for p in survivors if p not in set(u3_ids)]
    meta = {SECAGG_META: {"senders": u3_ids, "dropped": dropped, "task": kind}}
    unmask_replies = run.stage(
        UNMASK, [Task(p, UNMASK, meta, round=round, expect=_ANY_ARRAYS) for p in u3]
    )
    revealed = {}
    for reply in unmask_replies:
        shares = _unmask_of(reply, run)
        if shares is not None:
            revealed[reply.participant.id] = shares
    run.enough(UNMASK, [p for p in u3 if p.id in revealed])
    if dropped:
        names = ", ".join(p.client_name for p in u2 if p.id in set(dropped))
        ctx.log(
            f"round {round}: secure aggregation recovers the sum without {len(dropped)} "
            f"client(s) that dropped after sharing their seeds: {names}"
        )

    try:
        total = server.recover(masked, revealed, survivors, u3_ids)
    except SecAggError as exc:
        raise TaskError(f"round {round}: the secure aggregation failed: {exc}") from exc
    _log_clipped(ctx, round, clear, spec)
    return _Done(total, server.fixed, u3, clear, list(run.failures))


class _Run:
    """One aggregation's stages: the threshold, the failure policy, the failures seen."""

    def __init__(
        self, ctx: SessionContext, spec: SecAggSpec, server_round: int, accept_failures: bool
    ) -> None:
        self.ctx = ctx
        self.round = server_round
        self.accept_failures = accept_failures
        self.failures: list[Failure] = []
        # Until the mask keys are in: an explicit threshold, else the floor of 2.
        self.threshold = spec.threshold or 2

    def stage(self, kind: str, tasks: Sequence[Task]) -> list[Reply]:
        """Every task's reply, in send order; failures recorded (or raised, see the policy)."""
        group: TaskGroup = self.ctx.send(tasks)
        replies: list[Reply] = []
        for outcome in group.outcomes():
            if isinstance(outcome, Failure):
                self.fail(outcome, group)
                continue
            replies.append(outcome)
        order = {t.to.id: i for i, t in enumerate(tasks)}
        replies.sort(key=lambda r: order.get(r.participant.id, len(order)))
        return replies

    def fail(self, failure: Failure, group: TaskGroup | None = None) -> None:
        self.failures.append(failure)
        self.ctx.log(
            f"round {self.round}: secure aggregation task {failure.kind!r} failed: {failure}"
        )
        if not self.accept_failures:
            if group is not None:
                group.cancel("an earlier task of the round failed")
            raise TaskError(
                f"round {self.round}: task {failure.kind!r} failed and accept_failures is "
                f"false: {failure}"
            )

    def enough(self, kind: str, survivors: Sequence[Participant], minimum: int = 0) -> None:
        """Raise unless ``survivors`` reach the threshold (and ``minimum``)."""
        needed = max(self.threshold, minimum)
        if len(survivors) >= needed:
            return
        what = (
            f"the threshold of {self.threshold}"
            if needed == self.threshold
            else f"min_fit_clients={minimum}"
        )
        raise self.stopped(kind, len(survivors), f"{what} needed to recover the sum")

    def stopped(self, kind: str, left: int, why: str) -> TaskError:
        """The error that stops the aggregation at ``kind``, listing every failure."""
        listed = "; ".join(str(f) for f in self.failures)
        return TaskError(
            f"round {self.round}: secure aggregation stopped at task {kind!r}: {left} "
            f"client(s) left; {why}" + (f" ({listed})" if listed else "")
        )


def _mask_key_of(reply: Reply, run: _Run) -> str | None:
    """A stage-A reply's mask public key; None (a failure) unless it is 32 bytes of url-safe
    base64, so one client's garbage cannot fail the whole round later."""
    key = reply.meta.get("mask_public_key")
    try:
        if not isinstance(key, str):
            raise SecAggError(f"expected a string, got {type(key).__name__}")
        b64decode(key, "mask_public_key", 32)
    except SecAggError as exc:
        run.fail(
            Failure(
                reply.participant,
                reply.kind,
                reply.round,
                "malformed",
                f"its {KEYS!r} reply carries no valid mask_public_key: {exc}",
            )
        )
        return None
    return key


def _shares_of(reply: Reply, u1: Sequence[str], run: _Run) -> dict[str, np.ndarray] | None:
    """The sealed records a stage-B reply carries, by recipient; None (a failure) when it
    does not carry exactly one per other client of U1."""
    me = reply.participant.id
    sent = {
        name[len(SHARE_PREFIX) :]: np.asarray(array, dtype=np.uint8)
        for name, array in reply.arrays.items()
        if name.startswith(SHARE_PREFIX)
    }
    expected = {p for p in u1 if p != me}
    if set(sent) != expected or len(sent) != len(reply.arrays):
        run.fail(
            Failure(
                reply.participant,
                reply.kind,
                reply.round,
                "malformed",
                f"its {SHARES!r} reply must carry one share record per other client "
                f"({len(expected)}); got arrays for {len(sent)} clients and "
                f"{len(reply.arrays) - len(sent)} other array(s)",
            )
        )
        return None
    return sent


def _unmask_of(reply: Reply, run: _Run) -> dict[str, Any] | None:
    """The revealed shares of a stage-D reply; None (a failure) when they do not decode."""
    array = reply.arrays.get(UNMASK_ARRAY)
    try:
        if array is None or set(reply.arrays) != {UNMASK_ARRAY}:
            raise ValueError(f"expected exactly the array {UNMASK_ARRAY!r}")
        shares = json.loads(np.asarray(array, dtype=np.uint8).tobytes().decode("utf-8"))
        if not isinstance(shares, dict):
            raise ValueError("expected a JSON object")
    except ValueError as exc:
        run.fail(
            Failure(
                reply.participant,
                reply.kind,
                reply.round,
                "malformed",
                f"its {UNMASK!r} reply does not decode: {exc}",
            )
        )
        return None
    return shares


def _log_clipped(
    ctx: SessionContext, server_round: int, clear: Mapping[str, Mapping[str, Any]], spec: SecAggSpec
) -> None:
    clipped = {
        name: int(meta["secagg_clipped"])
        for name, meta in clear.items()
        if isinstance(meta.get("secagg_clipped"), int) and meta["secagg_clipped"] > 0
    }
    if clipped:
        listed = ", ".join(f"{name} {count}" for name, count in sorted(clipped.items()))
        ctx.log(
            f"round {server_round}: secure aggregation clipped update values to +-"
            f"{spec.clip_range:g} (values per client: {listed}); raise "
            "secure_aggregation.clip_range if that is more than a few"
        )
