"""The client's half of secure aggregation: a mod that answers the protocol's stages and
masks the fit reply, so nothing but a masked vector of this silo's update leaves it.

The server's half and the stages are in :mod:`fedsilo.workflows.secure`; the mathematics in
:mod:`fedsilo.privacy.secagg`. :func:`secure_aggregation` returns a
:data:`~fedsilo.client.mods.Mod` that sits inside the accounting mod, right over the executor
(:func:`fedsilo.client.mods.client_mods`):

* ``secagg.keys`` -- a fresh mask key pair for this round (held in memory only; a client
  restarted mid-round has lost it and counts as dropped, which the protocol tolerates);
* ``secagg.shares`` -- Shamir shares of the self-mask seed and the mask private key, one
  record per peer, each sealed to the peer's *join* key (:mod:`fedsilo.client.keys`), so the
  server relaying them cannot read one;
* ``secagg.deliver`` -- opens the records its peers sealed to it (a record that does not
  open, or names another round, session or key set, is refused: the server tampered);
* ``fit`` with ``meta["secagg"]`` -- the executor trains as usual (it never sees the secagg
  meta); once per round and set of survivors (a second masked update of the same round
  against another set is refused: the server would subtract the two sums); its reply's
  arrays and ``num_examples`` become ONE masked vector of
  ``encode(w * (x - global) || w)``, packed to ``ceil(modulus_bits / 8)`` bytes a value
  (uint8); of its meta only :func:`~fedsilo.workflows.secure.clear_meta` stays in clear;
* another task with ``meta["secagg"]["scale"]`` (glm ``newton_stats``, ...) -- the same,
  for a sum of statistics: every reply array times the public scale, weight 1;
* ``secagg.unmask`` -- reveals the shares the server may have: of the self-mask seeds of
  the clients that sent masked input, of the mask keys of those that dropped -- never both
  for one client (the library refuses).

The client checks what a dishonest server could abuse (:mod:`fedsilo.privacy.secagg.client`):
the threshold must be a strict majority of the round's clients, its own mask key must be
listed unchanged, and it masks only against the survivors whose records it holds, at least
the threshold of them. Because :func:`~fedsilo.client.mods.release_once` is outside this mod,
what it stores and replays is the masked reply, byte for byte -- the unmasked update is never
written to the silo's disk.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from fedsilo.client.mods import Handler, Mod, TaskReply, TaskRequest
from fedsilo.errors import FedsiloError
from fedsilo.federation.task import Sealed
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.privacy.secagg.client import ClientAggregation
from fedsilo.privacy.secagg.encoding import FixedPoint, encode_update, pack
from fedsilo.workflows.secure import (
    DELIVER,
    KEYS,
    MASKED_ARRAY,
    SECAGG_META,
    SHARE_PREFIX,
    SHARES,
    UNMASK,
    UNMASK_ARRAY,
    clear_meta,
)

__all__ = ["MASKED_ONLY", "SealingPeer", "secure_aggregation"]

#: task kinds whose replies exist only to be masked into a secure sum (eda's statistics under
#: secure aggregation): asked without meta["secagg"], a server would get one silo's in clear
MASKED_ONLY = frozenset({"eda_sketch_sum", "eda_summary_sum"})


class SealingPeer(Protocol):
    """Who this participant is and its sealing to peers (a
    :class:`~fedsilo.client.context.ClientContext` is one)."""

    @property
    def session_id(self) -> str: ...

    @property
    def participant_id(self) -> str: ...

    def seal(self, recipient_id: str, plaintext: bytes) -> Sealed: ...

    def open(self, sealed: Sealed) -> bytes: ...


class _Refused(FedsiloError):
    """A secure-aggregation task this client will not answer (the reply says why)."""


class _Round:
    """One round's aggregation on this client: the library's state and the spec."""

    def __init__(self, aggregation: ClientAggregation, spec: SecAggSpec, everyone: list[str]):
        self.aggregation = aggregation
        self.spec = spec
        self.everyone = everyone
        self.peers: list[str] = []


def secure_aggregation(peer: SealingPeer | None) -> Mod:
    """The secure-aggregation mod of one participant (see the module docstring).

    Parameters
    ----------
    peer : SealingPeer or None
        This participant's identity and keys; None for a client that has none (every
        secure-aggregation task then fails, saying so; other tasks pass through).
    """
    rounds: dict[int, _Round] = {}
    # (round, kind) -> the survivors this client masked its reply against: a second sum of the same
    # round over another set would give the server the difference (someone's update)
    masked: dict[tuple[int, str], frozenset[str]] = {}
    lock = threading.Lock()

    def mod(task: TaskRequest, call_next: Handler) -> TaskReply:
        secagg = task.meta.get(SECAGG_META)
        # A protocol stage, or a task whose reply is to be masked (fit, newton_stats, ...).
        if task.kind not in (KEYS, SHARES, DELIVER, UNMASK) and not (
            isinstance(secagg, Mapping) and "survivors" in secagg
        ):
            if task.kind in MASKED_ONLY:
                return TaskReply.failed(
                    f"{task.label}: secure aggregation refused: task kind {task.kind!r} is "
                    "answered only masked, into a secure sum, and this one carries no "
                    f"{SECAGG_META!r} survivors"
                )
            return call_next(task)
        if peer is None:
            return TaskReply.failed(
                f"{task.label}: this client has no participant keys, so it cannot take part "
                "in secure aggregation."
            )
        if not isinstance(secagg, Mapping):
            return TaskReply.failed(f"{task.label}: the task carries no {SECAGG_META!r} meta.")
        try:
            with lock:
                if task.kind == KEYS:
                    return _keys(peer, rounds, task, secagg)
                state = rounds.get(task.round)
                if state is None:
                    raise _Refused(
                        f"no secure aggregation is under way for round {task.round} on this "
                        "client (it restarted since the round's keys were made)"
                    )
                if task.kind == SHARES:
                    return _shares(peer, state, secagg)
                if task.kind == DELIVER:
                    return _deliver(peer, state, task)
                if task.kind == UNMASK:
                    reply = _unmask(state, secagg)
                    del rounds[task.round]
                    return reply
                survivors = frozenset(str(p) for p in secagg["survivors"])
                earlier = masked.get((task.round, task.kind))
            if earlier is not None and earlier != survivors:
                raise _Refused(
                    f"this client already sent its masked update of round {task.round} against "
                    f"{len(earlier)} survivors; masking it again against another set "
                    f"({len(survivors)}) would let the server subtract the two sums"
                )
            reply = _fit(state, task, secagg, call_next)
            if reply.ok:
                with lock:
                    masked[task.round, task.kind] = survivors
            return reply
        except (FedsiloError, ValueError, KeyError, TypeError) as exc:
            return TaskReply.failed(f"{task.label}: secure aggregation refused: {exc}")

    return mod


def _keys(
    peer: SealingPeer, rounds: dict[int, _Round], task: TaskRequest, secagg: Mapping[str, Any]
) -> TaskReply:
    everyone = [str(p) for p in secagg["participants"]]
    me = peer.participant_id
    if me not in everyone or len(set(everyone)) != len(everyone):
        raise _Refused(f"the round's participants {everyone} must list this client ({me}) once")
    # The server's threshold is checked (a strict majority) rather than configured.
    spec = SecAggSpec.model_validate({**dict(secagg["spec"]), "threshold": None})
    aggregation = ClientAggregation(peer.session_id, task.round, me, spec)
    # Only the current round is kept: an older one was abandoned by the server.
    rounds.clear()
    rounds[task.round] = _Round(aggregation, spec, everyone)
    return TaskReply(status="ok", meta=dict(aggregation.keys()))


def _shares(peer: SealingPeer, state: _Round, secagg: Mapping[str, Any]) -> TaskReply:
    peers = {str(k): str(v) for k, v in dict(secagg["peers"]).items()}
    threshold = int(secagg["threshold"])
    me = peer.participant_id
    unknown = sorted(set(peers) - set(state.everyone))
    if unknown or me not in peers:
        raise _Refused(
            f"the peers to share with must be among the round's participants and include "
            f"this client; got unknown {unknown}"
        )
    # shares() holds the threshold to a strict majority of the peers (and at least 2).
    records = state.aggregation.shares(peers, threshold)
    state.peers = sorted(peers)
    arrays = {
        SHARE_PREFIX + recipient: np.frombuffer(peer.seal(recipient, record).ciphertext, np.uint8)
        for recipient, record in records.items()
    }
    return TaskReply(status="ok", arrays=arrays)


def _fit(
    state: _Round, task: TaskRequest, secagg: Mapping[str, Any], call_next: Handler
) -> TaskReply:
    survivors = [str(p) for p in secagg["survivors"]]
    weighting = secagg.get("weighting", "num_examples")
    # Checked again by mask(): the survivors must be exactly the owners of the records this
    # client holds, at least the threshold -- before the executor trains.
    unknown = sorted(set(survivors) - set(state.peers))
    if unknown:
        raise _Refused(f"survivors {unknown} did not take part in the round's shares")
    # The executor sees the fit task as without secure aggregation.
    plain = TaskRequest(
        id=task.id,
        kind=task.kind,
        round=task.round,
        meta={k: v for k, v in task.meta.items() if k != SECAGG_META},
        arrays=task.arrays,
    )
    reply = call_next(plain)
    if not reply.ok:
        return reply
    if "scale" in secagg:
        # A sum of statistics: every reply array, times the public scale, counted once.
        scale = float(secagg["scale"])
        if not (np.isfinite(scale) and scale > 0):
            raise _Refused(f"the scale of a secure sum must be a finite number > 0, got {scale}")
        clip = state.spec.clip_range
        # A diverged trial (an overflowing mean: deviance inf) saturates instead of failing
        # the round: the server sees an objective too large to accept and halves the step.
        update = {
            name: np.nan_to_num(
                np.asarray(array, dtype=np.float64) * scale, nan=clip, posinf=clip, neginf=-clip
            )
            for name, array in reply.arrays.items()
        }
        weight = 1
    else:
        if set(reply.arrays) != set(task.arrays):
            raise _Refused(
                f"the fit reply's arrays {sorted(reply.arrays)} are not the global model's "
                f"{sorted(task.arrays)}"
            )
        update = {
            name: np.asarray(reply.arrays[name], dtype=np.float64)
            - np.asarray(task.arrays[name], dtype=np.float64)
            for name in task.arrays
        }
        weight = 1 if weighting == "unit" else _count(reply.meta, "num_examples")
    clip = state.spec.clip_range
    clipped = sum(int(np.count_nonzero(np.abs(u) > clip)) for u in update.values())
    vector = encode_update(FixedPoint.from_spec(state.spec), update, weight)
    del update
    # Packed to ceil(modulus_bits / 8) bytes a value (7 with the defaults), not 8.
    masked = pack(state.aggregation.mask(vector, survivors), state.spec.modulus_bits)
    meta = clear_meta(reply.meta)
    meta["secagg_clipped"] = clipped
    return TaskReply(status="ok", meta=meta, arrays={MASKED_ARRAY: masked})


def _deliver(peer: SealingPeer, state: _Round, task: TaskRequest) -> TaskReply:
    records: dict[str, bytes] = {}
    for name, array in task.arrays.items():
        if not name.startswith(SHARE_PREFIX):
            raise _Refused(f"unexpected array {name!r}")
        sender = name[len(SHARE_PREFIX) :]
        sealed = Sealed(sender=sender, ciphertext=np.asarray(array).tobytes())
        records[sender] = peer.open(sealed)
    # Keyed by the sender the sealing authenticated: a record must be its sender's own.
    state.aggregation.receive(records)
    return TaskReply(status="ok")


def _unmask(state: _Round, secagg: Mapping[str, Any]) -> TaskReply:
    senders = [str(p) for p in secagg["senders"]]
    dropped = [str(p) for p in secagg["dropped"]]
    revealed = state.aggregation.unmask(senders, dropped)
    body = json.dumps(revealed, sort_keys=True).encode("utf-8")
    return TaskReply(status="ok", arrays={UNMASK_ARRAY: np.frombuffer(body, dtype=np.uint8)})


def _count(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Refused(f"the fit reply's meta[{key!r}] must be an integer >= 0, got {value!r}")
    return value
