"""The run's settings: the run config (deployment) or BENCH_FLWR_* variables (simulation).

``flwr.simulation.run_simulation`` passes an empty run config, so ``bench/flower_runs.py``
hands the same keys over in the environment for that runtime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

KEYS = ("num-rounds", "num-nodes", "params", "secure", "threshold", "out")


def settings(run_config: dict[str, Any]) -> dict[str, Any]:
    env = {k: os.environ.get("BENCH_FLWR_" + k.upper().replace("-", "_")) for k in KEYS}
    return {**{k: v for k, v in env.items() if v is not None}, **run_config}


def write(out: str, payload: dict[str, Any]) -> None:
    """Write the ServerApp's result atomically (the harness polls for the file)."""
    if out:
        tmp = Path(out + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(out)


def append_line(path: str, row: dict[str, Any]) -> None:
    """One JSON line per client message; a short O_APPEND write is not interleaved."""
    if path:
        with open(path, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(row) + "\n")
