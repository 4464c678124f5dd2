"""Workload c: FedAvg of N updates of 25M float32 on the server, GB/s and peak RSS.

Run as its own process (the harness does) so VmHWM is this measurement's alone::

    .venv/bin/python bench/aggregation.py --mode stream --updates 10 --size 25000000

Modes:

* ``stream``: fedsilo's ``FedAvg.aggregate_fit`` over a generator that makes one update at a
  time, as replies arrive off the wire; peak memory should not grow with N. Making an update
  (``np.full``) is timed separately and subtracted.
* ``list``: all N updates in memory first (the Flower way: ``aggregate_train`` takes the list of
  reply messages); time and peak RSS above the inputs.
* ``numpy``: the physical reference, a numpy one-liner over the same list:
  ``sum(u * (w / W) for u, w in zip(updates, weights))``.

GB/s counts the bytes of the N input updates read once (N * size * 4 bytes / seconds).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from common import peak_rss_mb, rss_mb

MIB = 1024.0 * 1024.0


def _update(i: int, size: int) -> np.ndarray:
    return np.full(size, float(i + 1), dtype=np.float32)


def _weights(n: int) -> list[int]:
    return [1000 + 10 * i for i in range(n)]  # unequal, so the weighting is exercised


def _expected(n: int) -> float:
    w = np.array(_weights(n), dtype=np.float64)
    return float((w * (np.arange(n) + 1)).sum() / w.sum())


def run(mode: str, n: int, size: int) -> dict[str, Any]:
    import os

    pid = os.getpid()
    update_mb = size * 4 / MIB
    weights = _weights(n)
    if mode == "numpy":
        updates = [_update(i, size) for i in range(n)]
        base = rss_mb(pid) or 0.0
        began = time.perf_counter()
        total = float(sum(weights))
        result = sum(u * (w / total) for u, w in zip(updates, weights, strict=True))
        seconds = time.perf_counter() - began
        value = float(np.asarray(result)[0])
        make_s = 0.0
    else:
        from fedsilo.federation import Participant, Reply
        from fedsilo.strategies.fedavg import FedAvg, FedAvgParams
        from fedsilo.wire import DatasetSummary

        dataset = DatasetSummary(train_rows=1, test_rows=0, columns=[])
        people = [Participant(f"p{i}", f"c{i}", dataset) for i in range(n)]
        current = {"w": np.zeros(size, dtype=np.float32)}
        strategy = FedAvg(FedAvgParams())
        # What making the updates costs, so stream mode can subtract it.
        t0 = time.perf_counter()
        for i in range(n):
            _update(i, size)
        make_s = time.perf_counter() - t0

        def replies() -> Iterator[Reply]:
            for i in range(n):
                yield Reply(people[i], {"num_examples": weights[i]}, {"w": _update(i, size)})

        if mode == "list":
            materialized = list(replies())
            base = rss_mb(pid) or 0.0
            began = time.perf_counter()
            out = strategy.aggregate_fit(1, current, materialized)
            seconds = time.perf_counter() - began
            make_s = 0.0
        else:
            base = rss_mb(pid) or 0.0
            began = time.perf_counter()
            out = strategy.aggregate_fit(1, current, replies())
            seconds = time.perf_counter() - began - make_s
        value = float(out["w"][0])
    peak = peak_rss_mb(pid) or 0.0
    if abs(value - _expected(n)) > 1e-3 * _expected(n):
        raise AssertionError(f"{mode}: got {value}, expected {_expected(n)}")
    return {
        "mode": mode,
        "updates": n,
        "floats_per_update": size,
        "update_mb": round(update_mb, 1),
        "seconds": round(seconds, 4),
        "make_updates_s": round(make_s, 4),
        "gb_per_s": round(n * size * 4 / 1e9 / seconds, 3),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(base, 1),
        # Memory the aggregation itself needed, in units of one update.
        "peak_over_inputs_in_updates": round((peak - base) / update_mb, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("stream", "list", "numpy"), required=True)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--size", type=int, default=25_000_000)
    args = parser.parse_args()
    print(json.dumps(run(args.mode, args.updates, args.size)))


if __name__ == "__main__":
    main()
