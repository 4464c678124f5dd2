"""Round timer shared by the bench ServerApps: FedAvg that stamps each round."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class TimedFedAvg(FedAvg):
    """Flower's own FedAvg; records when each round's train step starts and ends and when
    its evaluate step ends (the round's end when there is one)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_start: list[float] = []
        self.train_end: list[float] = []
        self.eval_end: list[float] = []

    def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        self.train_start.append(time.perf_counter())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        out = super().aggregate_train(server_round, replies)
        self.train_end.append(time.perf_counter())
        return out

    def aggregate_evaluate(self, server_round, replies):  # type: ignore[no-untyped-def]
        out = super().aggregate_evaluate(server_round, replies)
        self.eval_end.append(time.perf_counter())
        return out


def wait_for_nodes(grid: Grid, n: int, timeout: float = 600.0) -> float:
    """Block until ``n`` nodes are connected; return the wall-clock time (time.time())."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(grid.get_node_ids()))} of {n} nodes joined")
        time.sleep(0.01)
    return time.time()


def write(out: str, payload: dict[str, Any]) -> None:
    if out:
        tmp = Path(out + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(out)  # atomic: the harness polls for the file
