"""ServerApp: N-node FedAvg of a 1M float32 model, plain or through Flower's SecAgg+ workflow.

Both use Flower's legacy ``DefaultWorkflow`` with its ``FedAvg`` (the only strategy family
``SecAggPlusWorkflow`` runs with): secure = 0 keeps the default fit workflow, secure = 1
replaces it with ``SecAggPlusWorkflow(num_shares=N, reconstruction_threshold=threshold)``,
every node a neighbour of every other (as in fedsilo). Evaluation is off. Each fit round is
timed (wall and this process's CPU), and under SecAgg+ each of its four stages too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp import Grid

from benchsecaggplus.settings import settings, write

app = ServerApp()

STAGES = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage")


class Timings:
    """Wall and CPU seconds per round (and per stage) of the fit workflow."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []

    def timed(self, name: str, fn: Any, *args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args)
        finally:
            row = self.rounds[-1]
            row.setdefault("stages", {})[name] = {
                "wall_ms": round(1000 * (time.perf_counter() - wall), 3),
                "cpu_ms": round(1000 * (time.process_time() - cpu), 3),
            }


class TimedSecAggPlus(SecAggPlusWorkflow):  # type: ignore[misc]
    """Flower's SecAgg+ workflow, unchanged, with each stage timed."""

    def __init__(self, timings: Timings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timings = timings
        for name in STAGES:
            stage = getattr(self, name)
            setattr(
                self,
                name,
                lambda grid, context, state, s=stage, n=name: timings.timed(
                    n.removesuffix("_stage"), s, grid, context, state
                ),
            )


def wait_for_nodes(grid: Grid, n: int, timeout: float = 600.0) -> float:
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(grid.get_node_ids()))} of {n} nodes joined")
        time.sleep(0.01)
    return time.time()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = settings(dict(context.run_config))
    n, rounds, params = int(cfg["num-nodes"]), int(cfg["num-rounds"]), int(cfg["params"])
    secure = int(cfg.get("secure", 0)) == 1
    joined_at = wait_for_nodes(grid, n)
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_evaluate_clients=0,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters([np.zeros(params, dtype=np.float32)]),
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
    )
    timings = Timings()
    if secure:
        inner: Any = TimedSecAggPlus(
            timings,
            num_shares=n,
            reconstruction_threshold=int(cfg["threshold"]),
            max_weight=1000.0,
            timeout=600.0,
        )
    else:
        inner = default_fit_workflow

    def fit(grid: Grid, context: Context) -> None:
        timings.rounds.append({})
        before = context.state.array_records.get("parameters")
        wall, cpu = time.perf_counter(), time.process_time()
        inner(grid, context)
        # Both workflows store a new ArrayRecord only when the round aggregated; SecAgg+
        # halting (too few nodes left) leaves the old one.
        timings.rounds[-1]["aggregated"] = (
            context.state.array_records.get("parameters") is not before
        )
        timings.rounds[-1]["wall_ms"] = round(1000 * (time.perf_counter() - wall), 3)
        timings.rounds[-1]["cpu_ms"] = round(1000 * (time.process_time() - cpu), 3)

    workflow = DefaultWorkflow(fit_workflow=fit, evaluate_workflow=lambda grid, context: None)
    began = time.perf_counter()
    workflow(grid, legacy)
    wall = time.perf_counter() - began
    ok = len(timings.rounds) == rounds and all(r["aggregated"] for r in timings.rounds)
    write(
        str(cfg["out"]),
        {
            "joined_at": joined_at,
            "round_ms": [r["wall_ms"] for r in timings.rounds],
            "rounds": timings.rounds,
            "wall_s": wall,
            "completed": ok,
        },
    )
