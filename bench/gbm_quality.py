"""Federated histogram gradient boosting (gbm) against scikit-learn trained centrally.

For each dataset and task: the gbm package's real server workflow and client executors in
one process (every task and reply through the wire codec, no HTTP), and scikit-learn's
HistGradientBoostingClassifier / Regressor on the pooled training rows with the same
hyperparameters (no early stopping) as the reference. Prints one JSON line per case:

* ``federated`` / ``central`` -- test ROC AUC (classification) or R^2 (regression), and
  ``gap`` = federated - central;
* ``trees``, ``wall_s`` (the federated run in process; the network adds one round trip per
  task round, see bench/round_latency.py) and ``central_wall_s``;
* ``bytes_per_tree`` -- the sum over every task and reply of one tree (histograms, update)
  of their frame sizes as encoded by ``fedsilo.wire.encode_frame``, over all clients;
  ``setup_bytes`` -- the sketch and bin rounds, once per session;
* ``task_rounds_per_tree`` -- histogram rounds + the update round.

Datasets: ``sample`` (fedsilo.data.synth.make_frames: 2 silos x 16,000 rows, 15 predictors,
test 4,000 rows) and ``breast-cancer`` (scikit-learn's, 400 training rows over 5 silos, 169
test rows). Regression targets: ``x0`` from the other sample predictors and
``mean_texture`` from the other breast-cancer measurements.

Usage: ``.venv/bin/python bench/gbm_quality.py [--trees 30] [--max-depth 3]
[--max-leaf-nodes N] [--max-bins 255] [--alpha 0.001]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import r2_score, roc_auc_score

from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import make_frames
from fedsilo.federation import get_package
from fedsilo.packages.gbm import GBMExecutor, GBMModel
from fedsilo.runners.inprocess import InProcessContext


def datasets() -> dict[str, tuple[list[pd.DataFrame], pd.DataFrame, list[str], str, str]]:
    """name -> (silos, test, predictors, binary target, continuous target)."""
    frames = make_frames(0)
    sample = [frames["train_silo0"], frames["train_silo1"]]
    cancer = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    shuffled = cancer.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train = shuffled.iloc[:400]
    return {
        "sample": (sample, frames["test"], [f"x{i}" for i in range(15)], "y", "x0"),
        "breast-cancer": (
            [train.iloc[i::5] for i in range(5)],
            shuffled.iloc[400:],
            [c for c in cancer.columns if c != "target"],
            "target",
            "mean_texture",
        ),
    }


def measure(
    name: str,
    task: str,
    silos: list[pd.DataFrame],
    test: pd.DataFrame,
    predictors: list[str],
    target: str,
    params: dict[str, Any],
    trees: int,
) -> dict[str, Any]:
    model_config = {
        "strategy": {"name": "HistGradientBoosting", "params": {}},
        "model": {"params": params},
        "ml_task": {"type": task, "params": {}},
    }
    package = get_package("gbm")
    mc, dc = package.parse_configs(model_config, {"predictors": predictors, "target": target})
    executors = {
        f"silo{i}": GBMExecutor(mc, dc, LocalDataset(frame, None, 256))
        for i, frame in enumerate(silos)
    }
    ctx = InProcessContext(executors, num_rounds=trees, package_name="gbm")
    start = time.perf_counter()
    package.workflow(ctx, mc, dc)
    wall = time.perf_counter() - start
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    estimator = GBMModel(mc, dc, arrays, meta).as_sklearn()

    pooled = pd.concat(silos)
    central_type = (
        HistGradientBoostingClassifier
        if task == "classification"
        else HistGradientBoostingRegressor
    )
    reference = central_type(
        max_iter=trees,
        learning_rate=params["learning_rate"],
        max_depth=params["max_depth"],
        max_leaf_nodes=params["max_leaf_nodes"],
        min_samples_leaf=params["min_samples_leaf"],
        l2_regularization=params["l2_regularization"],
        max_bins=params["max_bins"],
        early_stopping=False,
        random_state=0,
    )
    start = time.perf_counter()
    reference.fit(pooled[predictors], pooled[target])
    central_wall = time.perf_counter() - start
    if task == "classification":
        metric = "roc_auc"
        ours = roc_auc_score(test[target], estimator.predict_proba(test)[:, 1])
        theirs = roc_auc_score(test[target], reference.predict_proba(test[predictors])[:, 1])
    else:
        metric = "r2"
        ours = r2_score(test[target], estimator.predict(test))
        theirs = r2_score(test[target], reference.predict(test[predictors]))
    per_tree = ctx.bytes["histograms"] + ctx.bytes["update"]
    return {
        "bench": "gbm_quality",
        "dataset": name,
        "task": task,
        "metric": metric,
        "federated": round(float(ours), 6),
        "central": round(float(theirs), 6),
        "gap": round(float(ours - theirs), 6),
        "silos": len(silos),
        "train_rows": len(pooled),
        "predictors": len(predictors),
        "trees": trees,
        "wall_s": round(wall, 3),
        "central_wall_s": round(central_wall, 3),
        "bytes_per_tree": per_tree // trees,
        "setup_bytes": ctx.bytes["sketch"] + ctx.bytes["bin"],
        "task_rounds_per_tree": sum(kind in ("histograms", "update") for kind, _, _ in ctx.asked)
        / trees,
        "params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=30)
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--max-leaf-nodes", type=int, default=None)
    parser.add_argument("--max-bins", type=int, default=255)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--min-samples-leaf", type=int, default=10)
    args = parser.parse_args()
    params = {
        "max_depth": args.max_depth,
        "max_leaf_nodes": args.max_leaf_nodes,
        "learning_rate": args.learning_rate,
        "max_bins": args.max_bins,
        "sketch_relative_accuracy": args.alpha,
        "min_samples_leaf": args.min_samples_leaf,
        "l2_regularization": 0.0,
        "random_state": 23,
    }
    for name, (silos, test, predictors, binary, continuous) in datasets().items():
        for task, target in (("classification", binary), ("regression", continuous)):
            columns = [c for c in predictors if c != target]
            row = measure(name, task, silos, test, columns, target, params, args.trees)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
