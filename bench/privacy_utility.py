"""What differential privacy costs in accuracy per epsilon: DP-SGD (ffnet), private Newton (glm).

Prints one JSON line per run:

* ``dpsgd`` -- the seed tutorial's FFNet config on the tutorial data (two silos of
  ``--rows`` rows each, batch ``--batch``, ``--rounds`` FedAvg rounds of one epoch; the
  executors and the strategy called directly, no server), per epsilon (``null``: no DP): the
  test accuracy, each silo's ``epsilon_spent`` after the last round, the noise multiplier and
  the wall time;
* ``glm_newton`` -- the glm newton solver under DP on three silos of 500 / 2,000 / 7,000 rows
  (logistic with the seed's ``max_grad_norm`` 7; Poisson with bounds 100 / 1000), per
  epsilon: the largest coefficient error in standard errors of statsmodels' pooled fit,
  ``epsilon_spent`` and the wall time.

Usage: ``.venv/bin/python bench/privacy_utility.py [--rows 16000] [--batch 1024] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
import torch

from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.federation import Participant, Reply, get_package
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.strategies import get_strategy
from fedsilo.wire import DatasetSummary

SEED_FFNET: dict[str, Any] = {
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "seed": 23,
}
SUMMARY = DatasetSummary(train_rows=0, test_rows=0, columns=[])


def dpsgd(epsilon: float | None, rows: int, batch: int, rounds: int) -> dict[str, Any]:
    frames = make_frames(seed=0)
    config = dict(SEED_FFNET)
    if epsilon is not None:
        config["differential_privacy_params"] = {"epsilon": epsilon, "max_grad_norm": 7}
    package = get_package("ffnet")
    mc, dc = package.parse_configs(config, {"predictors": FEATURES, "target": "y"})
    silos = [
        package.executor(
            mc, dc, LocalDataset(frames[f"train_silo{i}"].iloc[:rows], frames["test"], batch)
        )
        for i in range(2)
    ]
    people = [Participant(f"p{i}", f"silo{i}", SUMMARY) for i in range(2)]
    strategy = get_strategy("FedAvg", {})
    weights = module_arrays(build_module(mc))
    started = time.perf_counter()
    replies: list[Reply] = []
    for server_round in range(1, rounds + 1):
        meta = {"round": server_round, "num_rounds": rounds}
        replies = [
            Reply(p, *s.handle("fit", meta, weights)) for p, s in zip(people, silos, strict=True)
        ]
        weights = strategy.aggregate_fit(server_round, weights, replies)
    wall = time.perf_counter() - started
    metrics, _ = silos[0].handle("evaluate", {"round": rounds}, weights)
    return {
        "bench": "dpsgd",
        "epsilon": epsilon,
        "rows_per_silo": rows,
        "batch": batch,
        "rounds": rounds,
        "test_accuracy": metrics["test_accuracy"],
        "epsilon_spent": [r.meta.get("epsilon_spent") for r in replies],
        "noise_multiplier": [r.meta.get("noise_multiplier") for r in replies],
        "wall_s": round(wall, 3),
    }


def glm_newton(task: str, epsilon: float, bounds: dict[str, float]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    beta = np.array([0.3, 0.5, -0.25, 0.1, 0.0])
    names = ["x0", "x1", "x2", "x3"]
    frames = []
    for n, shift in zip((500, 2000, 7000), (-0.5, 0.0, 0.4), strict=True):
        x = rng.normal(shift, 1.0, size=(n, 4))
        eta = beta[0] + x @ beta[1:]
        frame = pd.DataFrame(x, columns=names)
        if task == "logistic":
            frame["y"] = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(float)
        else:
            frame["y"] = rng.poisson(np.exp(eta)).astype(float)
        frames.append(frame)
    package = get_package("glm")
    config = {
        "model": {"params": {"input_size": 4}},
        "ml_task": {"type": task, "params": {"alpha": 0, "l1_ratio": 0}},
        "differential_privacy_params": {"epsilon": epsilon, **bounds},
    }
    mc, dc = package.parse_configs(config, {"predictors": names, "target": "y"})
    executors = {
        f"silo{i}": package.executor(mc, dc, LocalDataset(f, None, 256))
        for i, f in enumerate(frames)
    }
    ctx = InProcessContext(executors, num_rounds=6, package_name="glm")
    started = time.perf_counter()
    package.workflow(ctx, mc, dc)
    wall = time.perf_counter() - started
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    pooled = pd.concat(frames, ignore_index=True)
    family = sm.families.Binomial() if task == "logistic" else sm.families.Poisson()
    reference = sm.GLM(pooled["y"], sm.add_constant(pooled[names]), family=family).fit()
    error = np.abs(np.asarray(arrays["beta"]) - reference.params.to_numpy()) / reference.bse
    return {
        "bench": "glm_newton",
        "family": task,
        "epsilon": epsilon,
        "bounds": bounds,
        "rounds": 6,
        "max_coef_error_in_se": round(float(np.max(error)), 4),
        "epsilon_spent": meta["privacy"]["epsilon_spent"],
        "wall_s": round(wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for epsilon in (None, 8.0, 4.0, 1.0, 0.5):
        print(json.dumps(dpsgd(epsilon, args.rows, args.batch, args.rounds)), flush=True)
    for task, bounds in (
        ("logistic", {"max_grad_norm": 7.0}),
        ("poisson", {"max_grad_norm": 100.0, "max_hessian_norm": 1000.0}),
    ):
        for epsilon in (1000.0, 10.0, 4.0, 1.0):
            print(json.dumps(glm_newton(task, epsilon, bounds)), flush=True)


if __name__ == "__main__":
    main()
