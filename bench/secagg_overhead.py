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

With ``--flower`` (and ``bench/.venv-flower`` from ``make bench``), the same steps with Flower
1.41's SecAgg+ functions on the same model, N and threshold are timed in that venv and
reported under ``"flower"`` (see :func:`flower_side`: its primitives, not its whole
workflow with a SuperLink).

With ``--flower-workflow``, Flower's whole SecAgg+ workflow also runs for each N, beside
plain FedAvg on the same model (``bench/flower_apps/secaggplus``: ``SecAggPlusWorkflow`` in
the ServerApp, ``secaggplus_mod`` in the ClientApp, ``flower_runs.run_secaggplus``): round
time, ServerApp CPU, ClientApp handler CPU and reply bytes per round, under ``"flower_workflow"``
with the secure/plain ratios. Deployment runtime (SuperLink + N SuperNodes) up to
``--deployment-max`` clients, the simulation runtime above (30 SuperNodes, each starting a
ClientApp process per message, do not fit 2 shared cores in a bounded time).

With ``--fedsilo-session``, fedsilo's round time in a real session, plain and secure, up to
``--session-max`` clients (``bench/secagg_session.py``: ffnet of 999,992 parameters, one
client process each), under ``"fedsilo_session"``.

Usage: ``.venv/bin/python bench/secagg_overhead.py [--params 1000000] [--clients 3 10 30]
[--flower] [--flower-workflow [--deployment-max 10]] [--fedsilo-session [--session-max 10]]
[--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import facts

if TYPE_CHECKING:
    from fedsilo.privacy.secagg import SecAggSpec

#: Flower's own virtualenv (``make bench`` creates it); ``--flower`` runs this script there
FLOWER_PYTHON = Path(__file__).resolve().parent / ".venv-flower" / "bin" / "python"

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
    # fedsilo is imported here, not at the top: ``--flower-side`` runs this file in
    # Flower's virtualenv, which has no fedsilo.
    from fedsilo.client.keys import KeyPair, open_sealed, seal
    from fedsilo.privacy.secagg import (
        ClientAggregation,
        FixedPoint,
        ServerAggregation,
        decode_mean,
        encode_update,
        pack,
    )

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


def measure(n: int, params: int, spec: SecAggSpec, flower: bool) -> dict[str, Any]:
    from fedsilo.privacy.secagg import FixedPoint

    one_round(n, 1_000, spec, dropouts=1)  # warm-up: imports, caches, first allocations
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
        # no transport, clients in parallel: a lower bound of the round time
        "critical_path_ms": {
            "secure": round(sum(w for w, _ in stages.values()) + _ms(full["server"].wall), 2),
            "plain": _ms(plain.wall),
        },
        **({"flower": flower_primitives(n, params, threshold)} if flower else {}),
        **facts(),
    }


def flower_workflow(
    n: int, params: int, threshold: int, rounds: int, deployment_max: int
) -> dict[str, Any]:
    """Flower's SecAgg+ workflow and plain FedAvg, same model, N and threshold (its venv)."""
    import tempfile

    import flower_runs

    version = flower_runs.available()
    if version is None:
        return {"available": False, "reason": f"{FLOWER_PYTHON} not found (make bench makes it)"}
    runtime = "deployment" if n <= deployment_max else "simulation"
    out: dict[str, Any] = {"flwr": version, "runtime": runtime, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="secagg-flower-") as tmp:
        for mode in ("plain", "secure"):
            try:
                out[mode] = flower_runs.run_secaggplus(
                    n,
                    rounds,
                    params,
                    threshold,
                    mode == "secure",
                    Path(tmp) / mode,
                    timeout=300 + (30 if runtime == "deployment" else 10) * n * rounds,
                    runtime=runtime,
                )
            except Exception as exc:  # recorded, the other N still run
                out[mode] = {"error": f"{type(exc).__name__}: {str(exc)[-400:]}"}
    plain, secure = out["plain"], out["secure"]
    if "error" not in plain and "error" not in secure:

        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 3) if b else None

        out["secure_vs_plain"] = {
            "round_ms": ratio(secure["round_ms"], plain["round_ms"]),
            "server_cpu_ms": ratio(secure["server_cpu_ms"], plain["server_cpu_ms"]),
            "client_cpu_ms": ratio(secure["client_ms"]["cpu"], plain["client_ms"]["cpu"]),
            "bytes_per_client": ratio(secure["bytes_per_client"], plain["bytes_per_client"]),
        }
    return out


def flower_primitives(n: int, params: int, threshold: int) -> dict[str, Any]:
    """The same steps with Flower's SecAgg+ functions, run in Flower's virtualenv."""
    if not FLOWER_PYTHON.exists():
        return {"available": False, "reason": f"{FLOWER_PYTHON} not found (make bench makes it)"}
    command = [str(FLOWER_PYTHON), __file__, "--flower-side"]
    command += ["--clients", str(n), "--params", str(params), "--threshold", str(threshold)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        return {"available": False, "reason": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def flower_side(n: int, params: int, threshold: int) -> dict[str, Any]:
    """Flower 1.41's SecAgg+ client and server steps on the same model, N and threshold.

    Replays ``secaggplus_mod._share_keys`` (two ``create_shares``) and
    ``_collect_masked_vectors`` (quantize, weight factor, self mask and N - 1 pairwise masks
    from ``pseudo_rand_gen``, mod) for each client, and the workflow's unmask step (sum,
    ``combine_shares``, masks removed, dequantize) with Flower's defaults (clipping_range
    8, quantization_range 2^22, modulus_range 2^32, max_weight above every weight). Share
    encryption and the transport are left out, as on the fedsilo side. Every node is every
    other's neighbour (num_shares = N), as in fedsilo.
    """
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        generate_shared_key,
    )
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine,
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_multiply,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize, quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import (
        bytes_to_private_key,
        bytes_to_public_key,
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    clipping, q_range, mod_range, max_weight = 8.0, 4194304, 4294967296, 10_000.0
    rng = np.random.default_rng(0)
    nids = list(range(1, n + 1))
    updates = {nid: [rng.normal(0, 1, params).astype(np.float32)] for nid in nids}
    weights = {nid: int(rng.integers(100, 10_000)) for nid in nids}
    keys = {nid: generate_key_pairs() for nid in nids}
    public = {nid: public_key_to_bytes(keys[nid][1]) for nid in nids}
    secret = {nid: private_key_to_bytes(keys[nid][0]) for nid in nids}
    seeds = {nid: os.urandom(32) for nid in nids}
    share_clocks, mask_clocks, masked, seed_shares = [], [], {}, {}
    for nid in nids:
        with Clock() as clock:
            seed_shares[nid] = create_shares(seeds[nid], threshold, n)
            create_shares(secret[nid], threshold, n)
        share_clocks.append(clock)
    for nid in nids:
        with Clock() as clock:
            q_ratio = round(weights[nid] / max_weight * q_range)
            parameters = parameters_multiply(updates[nid], q_ratio / q_range)
            quantized = factor_combine(q_ratio, quantize(parameters, clipping, q_range))
            shapes = [a.shape for a in quantized]
            quantized = parameters_addition(
                quantized, pseudo_rand_gen(seeds[nid], mod_range, shapes)
            )
            for other in nids:
                if other == nid:
                    continue
                shared = generate_shared_key(keys[nid][0], bytes_to_public_key(public[other]))
                mask = pseudo_rand_gen(shared, mod_range, shapes)
                if nid > other:
                    quantized = parameters_addition(quantized, mask)
                else:
                    quantized = parameters_subtraction(quantized, mask)
            masked[nid] = parameters_mod(quantized, mod_range)
        mask_clocks.append(clock)
    sent = sum(len(ndarray_to_bytes(a)) for a in masked[nids[0]])

    def server(dropouts: int) -> Clock:
        active, dropped = nids[dropouts:], nids[:dropouts]
        with Clock() as clock:
            total = masked[active[0]]
            for nid in active[1:]:
                total = parameters_addition(total, masked[nid])
            shapes = get_parameters_shape(total)
            for nid in active:
                seed = combine_shares(seed_shares[nid][:threshold])
                total = parameters_subtraction(total, pseudo_rand_gen(seed, mod_range, shapes))
            for nid in dropped:
                private = bytes_to_private_key(secret[nid])  # as combine_shares gives it
                for other in active:
                    shared = generate_shared_key(private, bytes_to_public_key(public[other]))
                    mask = pseudo_rand_gen(shared, mod_range, shapes)
                    if nid > other:
                        total = parameters_addition(total, mask)
                    else:
                        total = parameters_subtraction(total, mask)
            total = parameters_mod(total, mod_range)
            _, total = factor_extract(total)
            dequantize(total, clipping, q_range)
        return clock

    def pair(clock: Clock) -> dict[str, float]:
        return {"wall": _ms(clock.wall), "cpu": _ms(clock.cpu)}

    share_wall, share_cpu = _medians(share_clocks)
    mask_wall, mask_cpu = _medians(mask_clocks)
    return {
        "available": True,
        "client_ms": {
            "shares": {"wall": share_wall, "cpu": share_cpu},
            "mask": {"wall": mask_wall, "cpu": mask_cpu},
        },
        "server_ms": {
            "recover": pair(server(0)),
            "recover_max_dropout": pair(server(n - threshold)),
        },
        "masked_bytes_per_client": sent,
        "bytes_ratio": round(sent / (4 * params), 4),
    }


def fedsilo_session(n: int, rounds: int, most: int) -> dict[str, Any]:
    """fedsilo's wall ms per round in a real session, plain and secure (secagg_session.py)."""
    if n > most:
        reason = f"N={n} > --session-max {most}: N torch client processes on 2 cores"
        return {"available": False, "reason": reason}
    import tempfile

    from secagg_session import params_of, session

    out: dict[str, Any] = {"params": params_of(55_555), "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="secagg-session-") as tmp:
        for mode in ("plain", "secure"):
            try:
                out[mode] = session(n, rounds, 55_555, mode == "secure", Path(tmp) / mode)
            except Exception as exc:  # recorded, the other runs go on
                out[mode] = {"error": f"{type(exc).__name__}: {str(exc)[-400:]}"}
    plain, secure = out["plain"].get("wall_ms_per_round"), out["secure"].get("wall_ms_per_round")
    out["secure_vs_plain"] = round(secure / plain, 3) if plain and secure else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--modulus-bits", type=int, default=None)
    parser.add_argument(
        "--flower", action="store_true", help="also time Flower's SecAgg+ steps (its venv)"
    )
    parser.add_argument(
        "--flower-workflow",
        action="store_true",
        help="also run Flower's SecAgg+ workflow and plain FedAvg (SuperLink, SuperNodes)",
    )
    parser.add_argument(
        "--rounds",
        "--flower-rounds",
        dest="rounds",
        type=int,
        default=3,
        help="rounds of each real run (Flower's workflow, fedsilo's session)",
    )
    parser.add_argument(
        "--deployment-max", type=int, default=10, help="above this N, Flower's simulation"
    )
    parser.add_argument(
        "--fedsilo-session", action="store_true", help="also a real fedsilo session's round time"
    )
    parser.add_argument("--session-max", type=int, default=10)
    parser.add_argument("--flower-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threshold", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flower_side:
        for n in args.clients:
            t = args.threshold or max(2, math.ceil(2 * n / 3))
            print(json.dumps(flower_side(n, args.params, t)), flush=True)
        return
    from fedsilo.privacy.secagg import SecAggSpec

    spec = SecAggSpec(enabled=True)
    if args.modulus_bits is not None:
        spec = SecAggSpec(enabled=True, modulus_bits=args.modulus_bits)
    for n in args.clients:
        # bench/harness.py stamps its own load_average over a row's: keep this N's start
        started = facts()["load_average"]
        row = {**measure(n, args.params, spec, args.flower), "load_average_start": started}
        if args.flower_workflow:
            row["flower_workflow"] = flower_workflow(
                n, args.params, row["threshold"], args.rounds, args.deployment_max
            )
        if args.fedsilo_session:
            row["fedsilo_session"] = fedsilo_session(n, args.rounds, args.session_max)
        if args.flower_workflow or args.fedsilo_session:
            row["load_average_after"] = facts()["load_average"]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
