"""fedsilo's round time with and without secure aggregation in a real session (issue 14).

ffnet 15 -> ``--hidden`` -> 2 (default 55,555 hidden units: 999,992 parameters, the 1M model
of ``secagg_overhead.py``), one real ``fedsilo client`` process per client on disjoint
200-row shards (``round_latency.tiny_shards``: one batch, so training costs little beside
the exchange), FedAvg, a plain session and then the same with
``"secure_aggregation": {"enabled": true}`` (its defaults). Runs through
``fedsilo_runs.run``: ``wall_ms_per_round`` is (session end - last join) / rounds, so it
includes the transport, the four secure-aggregation exchanges, the metrics and checkpoint
writes and, once, the final model save. Prints one JSON line per N::

    {"bench": "secagg_session", "clients": 3, "params": 999992,
     "plain": {"wall_ms_per_round": ...}, "secure": {...}, "secure_vs_plain": ..., ...}

Usage: ``.venv/bin/python bench/secagg_session.py [--clients 3 10] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fedsilo_runs
from common import facts
from round_latency import FFNET_CONFIG, tiny_shards

from fedsilo.data.synth import FEATURES, TARGET

ROWS = 200


def params_of(hidden: int) -> int:
    """Weights and biases of 15 -> hidden -> 2."""
    return 15 * hidden + hidden + hidden * 2 + 2


def session(n: int, rounds: int, hidden: int, secure: bool, work: Path) -> dict[str, Any]:
    config = copy.deepcopy(FFNET_CONFIG)
    config["model"]["params"]["hidden_layer_sizes"] = [hidden]
    if secure:
        config["secure_aggregation"] = {"enabled": True}
    shards = tiny_shards(work / "shards", n, ROWS)
    workload = ("ffnet", config, {"predictors": FEATURES, "target": TARGET})
    return fedsilo_runs.run(
        workload, n, rounds, work / "run", [t for t, _ in shards], shards[0][1], 300 + 60 * n
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=55_555)
    args = parser.parse_args()
    for n in args.clients:
        row: dict[str, Any] = {
            "bench": "secagg_session",
            "clients": n,
            "params": params_of(args.hidden),
            "rounds": args.rounds,
            "rows_per_client": ROWS,
            **facts(),
        }
        with tempfile.TemporaryDirectory(prefix="secagg-session-") as tmp:
            for mode in ("plain", "secure"):
                try:
                    row[mode] = session(
                        n, args.rounds, args.hidden, mode == "secure", Path(tmp) / mode
                    )
                except Exception as exc:  # recorded; the other runs go on
                    row[mode] = {"error": f"{type(exc).__name__}: {str(exc)[-400:]}"}
        plain, secure = (
            row["plain"].get("wall_ms_per_round"),
            row["secure"].get("wall_ms_per_round"),
        )
        row["secure_vs_plain"] = round(secure / plain, 3) if plain and secure else None
        row["load_average_after"] = facts()["load_average"]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
