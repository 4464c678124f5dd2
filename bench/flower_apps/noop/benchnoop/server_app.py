"""ServerApp: N-node FedAvg over a 16-float vector, timed per round."""

import os
import time

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from benchnoop.timing import TimedFedAvg, wait_for_nodes, write

app = ServerApp()


def _from_env() -> dict[str, str]:
    keys = ("num-rounds", "num-nodes", "payload-size", "out")
    env = {k: os.environ.get("BENCH_FLWR_" + k.upper().replace("-", "_")) for k in keys}
    return {k: v for k, v in env.items() if v is not None}


@app.main()
def main(grid: Grid, context: Context) -> None:
    # flwr.simulation.run_simulation passes an empty run config: bench/flower_apps/simulate.py
    # hands the settings over in BENCH_FLWR_* variables instead.
    cfg = {**_from_env(), **context.run_config}
    n, rounds = int(cfg["num-nodes"]), int(cfg["num-rounds"])
    joined_at = wait_for_nodes(grid, n)
    strategy = TimedFedAvg(
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n
    )
    began = time.perf_counter()
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(int(cfg.get("payload-size", 16)), dtype=np.float32)]),
        num_rounds=rounds,
    )
    wall = time.perf_counter() - began
    round_ms = [
        1000 * (e - s) for s, e in zip(strategy.train_start, strategy.train_end, strict=True)
    ]
    write(str(cfg["out"]), {"joined_at": joined_at, "round_ms": round_ms, "wall_s": wall})
