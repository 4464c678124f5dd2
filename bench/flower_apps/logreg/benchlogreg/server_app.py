"""ServerApp: FedAvg over N nodes, every round train then evaluate on all nodes."""

import itertools
import time

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from benchlogreg.timing import TimedFedAvg, wait_for_nodes, write

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n, rounds = int(cfg["num-nodes"]), int(cfg["num-rounds"])
    joined_at = wait_for_nodes(grid, n)
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=n,
        min_evaluate_nodes=n,
        min_available_nodes=n,
    )
    initial = ArrayRecord([np.zeros((2, 15), dtype=np.float32), np.zeros(2, dtype=np.float32)])
    began = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
    wall = time.perf_counter() - began
    ends = [began, *strategy.eval_end]
    round_ms = [1000 * (b - a) for a, b in itertools.pairwise(ends)]
    final = result.evaluate_metrics_clientapp[rounds]
    write(
        str(cfg["out"]),
        {
            "joined_at": joined_at,
            "round_ms": round_ms,
            "wall_s": wall,
            "accuracy": float(final["accuracy"]),
            "log_loss": float(final["loss"]),
        },
    )
