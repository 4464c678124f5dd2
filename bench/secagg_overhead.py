"""Secure aggregation overhead per round (issue 14): the library's compute and bytes.

For a model of ``--params`` float32 parameters (default 1M) and N clients (default 3, 10,
30), runs the four stages of one secure aggregation in this process with the real crypto
(:mod:`fedsilo.privacy.secagg`, share records sealed and opened with
:mod:`fedsilo.client.keys`) and measures:

* **client compute** (ms, median over the N clients, per stage and in total): keys; shares
  (Shamir split of both seeds + sealing the N - 1 records); mask (opening the records,
  encoding the update with its weight, N - 1 pair seeds, N mask streams, packing to
  ``ceil(k / 8)`` bytes a value); unmask;
* **server compute** (ms): summing the N packed masked vectors, recovering the sum and decoding
  the weighted mean, with no dropout and with the most the threshold allows
  (``n - t`` clients dropped after masking: the server then rebuilds their mask keys and
  removes ``(n - t) * t`` pairwise masks); beside the plain weighted mean of N float32
  updates in numpy;
* **bytes sent per client**: the mask key, the sealed share records, the packed masked
  vector and the unmask reply, beside a plain float32 update; and their ratio;
* wall and CPU time of each: on a shared, loaded machine the process's CPU time is what a
  stage costs, the wall time adds the wait for a core;
* the largest error of the decoded mean against numpy's, and the stated bound
  ``clip_range / (2 ** bits - 2)``.

Transport, scheduling and training are not in these numbers (the round time of a real
session is measured by the workflow's bench). Prints one JSON line per N::

    {"bench": "secagg_overhead", "clients": 10, "params": 1000000,
     "client_ms": {"keys": {"wall": ..., "cpu": ...}, "shares": ..., "mask": ...,
                   "unmask": ..., "total": ...},
     "server_ms": {"recover": {"wall": ..., "cpu": ...}, "recover_max_dropout": ...,
                   "plain_mean": ...},
     "bytes_per_client": {"secure": ..., "plain": ..., "ratio": ...}, ...}

Usage: ``.venv/bin/python bench/secagg_overhead.py [--params 1000000] [--clients 3 10 30]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import facts

from fedsilo.client.keys import KeyPair, open_sealed, seal
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.privacy.secagg.client import ClientAggregation
from fedsilo.privacy.secagg.encoding import FixedPoint, decode_mean, encode_update, pack
from fedsilo.privacy.secagg.server import ServerAggregation

SESSION = "bench-session"
ROUND = 1


def _ms(seconds: float) -> float:
    return round(1000.0 * seconds, 2)


class Clock:
    """Wall and CPU seconds of a block. On a shared, loaded machine the process's CPU time
    is the compute a stage costs; the wall time adds waiting for a core."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _medians(clocks: list[Clock]) -> tuple[float, float]:
    return (
        _ms(statistics.median(c.wall for c in clocks)),
        _ms(statistics.median(c.cpu for c in clocks)),
    )


def one_round(
    n: int, params: int, spec: SecAggSpec, dropouts: int, seed: int = 0
) -> dict[str, Any]:
    """One secure aggregation of N updates; ``dropouts`` clients vanish after masking."""
    rng = np.random.default_rng(seed)
    ids = [f"client-{i:03d}" for i in range(n)]
    updates = {pid: {"weights": rng.normal(0, 1, params).astype(np.float32)} for pid in ids}
    weights = {pid: int(rng.integers(100, 10_000)) for pid in ids}
    join = {pid: KeyPair.generate() for pid in ids}
    fixed = FixedPoint.from_spec(spec)
    timings: dict[str, list[Clock]] = {"keys": [], "shares": [], "mask": [], "unmask": []}
    sent: dict[str, int] = dict.fromkeys(ids, 0)

    clients = {pid: ClientAggregation(SESSION, ROUND, pid, spec) for pid in ids}
    mask_keys: dict[str, str] = {}
    for pid in ids:
        with Clock() as clock:
            mask_keys[pid] = clients[pid].keys()["mask_public_key"]
        timings["keys"].append(clock)
        sent[pid] += len(json.dumps({"mask_public_key": mask_keys[pid]}))

    server = ServerAggregation(SESSION, ROUND, spec, mask_keys)
    sealed: dict[str, dict[str, bytes]] = {}  # sender -> recipient -> payload
    for pid in ids:
        with Clock() as clock:
            records = clients[pid].shares(mask_keys, server.threshold)
            sealed[pid] = {
                peer: seal(
                    join[pid],
                    join[peer].public_bytes,
                    record,
                    session_id=SESSION,
                    sender_id=pid,
                    recipient_id=peer,
                )
                for peer, record in records.items()
            }
        timings["shares"].append(clock)
        sent[pid] += sum(len(payload) for payload in sealed[pid].values())

    packed: dict[str, np.ndarray] = {}
    for pid in ids:
        with Clock() as clock:
            inbox = {
                owner: open_sealed(
                    join[pid],
                    join[owner].public_bytes,
                    sealed[owner][pid],
                    session_id=SESSION,
                    sender_id=owner,
                    recipient_id=pid,
                )
                for owner in ids
                if owner != pid
            }
            clients[pid].receive(inbox)
            vector = encode_update(fixed, updates[pid], weights[pid])
            packed[pid] = pack(clients[pid].mask(vector, ids), spec.modulus_bits)
        timings["mask"].append(clock)
        sent[pid] += packed[pid].nbytes

    senders = ids[dropouts:]
    dropped = ids[:dropouts]
    replies = {}
    for pid in senders:
        with Clock() as clock:
            replies[pid] = clients[pid].unmask(senders, dropped)
        timings["unmask"].append(clock)
        sent[pid] += len(json.dumps(replies[pid]))

    with Clock() as server_clock:
        total = server.recover({pid: packed[pid] for pid in senders}, replies, ids, senders)
        mean, total_weight = decode_mean(fixed, total, updates[ids[0]])

    reference = np.average(
        [updates[pid]["weights"].astype(np.float64) for pid in senders],
        axis=0,
        weights=[weights[pid] for pid in senders],
    )
    assert total_weight == sum(weights[pid] for pid in senders)
    return {
        "timings": timings,
        "server": server_clock,
        "threshold": server.threshold,
        "max_error": float(np.max(np.abs(mean["weights"] - reference))),
        "bytes": statistics.median(sent[pid] for pid in senders),
    }


def plain_mean(n: int, params: int, seed: int = 0) -> Clock:
    """The plain server's work on the same updates: a weighted mean of N float32 vectors."""
    rng = np.random.default_rng(seed)
    updates = [rng.normal(0, 1, params).astype(np.float32) for _ in range(n)]
    weights = rng.integers(100, 10_000, n)
    with Clock() as clock:
        total = np.zeros(params, dtype=np.float64)
        for update, weight in zip(updates, weights, strict=True):
            total += weight * update.astype(np.float64)
        total /= weights.sum()
    return clock


def measure(n: int, params: int, spec: SecAggSpec) -> dict[str, Any]:
    full = one_round(n, params, spec, dropouts=0)
    threshold = full["threshold"]
    worst = one_round(n, params, spec, dropouts=n - threshold, seed=1)
    stages = {stage: _medians(clocks) for stage, clocks in full["timings"].items()}
    plain_bytes = 4 * params  # the float32 update a plain fit reply carries
    fixed = FixedPoint.from_spec(spec)
    plain = plain_mean(n, params)

    def pair(clock: Clock) -> dict[str, float]:
        return {"wall": _ms(clock.wall), "cpu": _ms(clock.cpu)}

    return {
        "bench": "secagg_overhead",
        "clients": n,
        "params": params,
        "threshold": threshold,
        "quantization_bits": spec.quantization_bits,
        "modulus_bits": spec.modulus_bits,
        "clip_range": spec.clip_range,
        "client_ms": {
            **{stage: {"wall": w, "cpu": c} for stage, (w, c) in stages.items()},
            "total": {
                "wall": round(sum(w for w, _ in stages.values()), 2),
                "cpu": round(sum(c for _, c in stages.values()), 2),
            },
        },
        "server_ms": {
            "recover": pair(full["server"]),
            "recover_max_dropout": pair(worst["server"]),
            "max_dropout": n - threshold,
            "plain_mean": pair(plain),
        },
        "bytes_per_client": {
            "secure": int(full["bytes"]),
            "plain": plain_bytes,
            "ratio": round(full["bytes"] / plain_bytes, 4),
        },
        "mean_error": {
            "max_abs": max(full["max_error"], worst["max_error"]),
            "bound": fixed.error_bound(1),
        },
        **facts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--modulus-bits", type=int, default=SecAggSpec().modulus_bits)
    args = parser.parse_args()
    spec = SecAggSpec(enabled=True, modulus_bits=args.modulus_bits)
    for n in args.clients:
        print(json.dumps(measure(n, args.params, spec)), flush=True)


if __name__ == "__main__":
    main()
