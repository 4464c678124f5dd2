"""How fast and how exact the linear_inference bundle is at GWAS scale.

Three silos of unequal size (20% / 30% / 50% of ``--rows``), two shared predictors (age-like
and sex-like), ``--chunks`` genotype-like chunked predictors (0/1/2, minor-allele frequency
drawn per chunk; five of them causal), a binary (``logit``) or continuous (``ols``) target,
and a 1,000-row test set per silo. The package's real server workflow and client executors run
in one process, every task and reply through the wire codec
(:class:`fedsilo.runners.inprocess.InProcessContext`), no HTTP. Prints one JSON line per strategy:

* ``wall_s`` -- the federated fit: every round's client statistics and test metrics, the codec
  and the server's batched Newton steps (data generation and the executors' one-time
  conversion of the frames are excluded and reported as ``setup_s``);
* ``rounds`` -- rounds to converge (tol 1e-10), each one task per silo;
* ``max_rel_coef_diff``, ``max_rel_se_diff``, ``max_abs_p_diff`` -- against statsmodels
  ``Logit`` / ``OLS`` on the pooled rows, over every coefficient of ``--check`` chunks' models
  (spread over the bundle, causal ones included);
* ``reply_mb_per_silo_round`` -- the bytes one silo sends per round.

Usage: ``.venv/bin/python bench/linear_inference_scale.py [--chunks 10000] [--rows 100000]
[--strategy logit|ols|both] [--check 20] [--eval-metrics loss accuracy roc_auc]``.
The full size holds the genotypes three times over at peak (about 3 x 8 GB at 10,000 x
100,000): use ``--chunks`` to scale down on a smaller machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm

from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import get_package
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.wire import encode_frame

SHARES = (0.2, 0.3, 0.5)
SHARED = ["age", "sex"]
STRATEGIES = {"logit": "LogitRegInference", "ols": "LinearRegInference"}


def draw_silo(
    n: int, m: int, maf: np.ndarray, causal: np.ndarray, logit: bool, rng: np.random.Generator
) -> pd.DataFrame:
    """One silo's table: shared, target and the (n, m) genotypes, as one float64 block."""
    values = np.empty((n, m + 3))
    values[:, 0] = rng.normal(0.0, 1.0, n)
    values[:, 1] = rng.integers(0, 2, n)
    for start in range(0, m, 1000):  # two Bernoulli alleles; in blocks to bound temporaries
        p = maf[start : start + 1000]
        alleles = (rng.random((n, p.size)) < p).astype(np.float64)
        alleles += rng.random((n, p.size)) < p
        values[:, 3 + start : 3 + start + p.size] = alleles
    eta = -0.2 + 0.3 * values[:, 0] - 0.2 * values[:, 1] + values[:, 3 + causal] @ np.full(5, 0.15)
    if logit:
        values[:, 2] = rng.random(n) < 1.0 / (1.0 + np.exp(-eta))
    else:
        values[:, 2] = eta + rng.normal(0.0, 1.0, n)
    return pd.DataFrame(values, columns=[*SHARED, "y", *(f"g{j}" for j in range(m))], copy=False)


def measure(args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    m = args.chunks
    maf = rng.uniform(0.05, 0.5, m)
    causal = rng.choice(m, 5, replace=False)
    check = np.unique(np.concatenate([causal, np.linspace(0, m - 1, args.check - 5, dtype=int)]))
    names = [f"g{j}" for j in range(m)]
    model_config: dict[str, Any] = {"strategy": {"name": STRATEGIES[strategy], "params": {}}}
    if args.eval_metrics:
        model_config["eval_metrics"] = args.eval_metrics
    package = get_package("linear_inference")
    mc, dc = package.parse_configs(
        model_config, {"target": "y", "shared_predictors": SHARED, "chunked_predictors": names}
    )
    setup = time.perf_counter()
    executors = {}
    kept = []  # the rows statsmodels needs: shared, target and the checked chunks
    sizes = [int(args.rows * share) for share in SHARES]
    for i, n in enumerate(sizes):
        train = draw_silo(n, m, maf, causal, strategy == "logit", rng)
        test = draw_silo(args.test_rows, m, maf, causal, strategy == "logit", rng)
        kept.append(train[[*SHARED, "y", *(names[j] for j in check)]].copy())
        executors[f"silo{i}"] = package.executor(mc, dc, LocalDataset(train, test, 1024))
        del train, test
        gc.collect()
    setup_s = time.perf_counter() - setup

    ctx = InProcessContext(executors, num_rounds=50, package_name="linear_inference")
    start = time.perf_counter()
    package.workflow(ctx, mc, dc)
    wall = time.perf_counter() - start
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    model = package.export(mc, dc, arrays, meta)
    k = len(SHARED) + 2
    reply = {
        "gradient": np.zeros((m, k)),
        "fisher": np.zeros((m, k, k)),
        "deviance": np.zeros(m),
    }

    pooled = pd.concat(kept, ignore_index=True)
    coef_diff = se_diff = p_diff = 0.0
    sm_wall = 0.0
    for j in check:
        design = sm.add_constant(pooled[[*SHARED, names[j]]])
        begin = time.perf_counter()
        if strategy == "logit":
            ref = sm.Logit(pooled["y"], design).fit(disp=0, method="newton", tol=1e-12)
        else:
            ref = sm.OLS(pooled["y"], design).fit()
        sm_wall += time.perf_counter() - begin
        table = model.summary(names[j])
        p_column = "P>|z|" if strategy == "logit" else "P>|t|"
        coef_diff = max(coef_diff, float(np.max(np.abs(table["coef"] / ref.params - 1.0))))
        se_diff = max(se_diff, float(np.max(np.abs(table["std err"] / ref.bse - 1.0))))
        p_diff = max(p_diff, float(np.max(np.abs(table[p_column] - ref.pvalues))))
    pvalues = model.p_values()
    return {
        "bench": "linear_inference_scale",
        "strategy": STRATEGIES[strategy],
        "chunks": m,
        "rows": int(sum(sizes)),
        "silo_rows": sizes,
        "test_rows_per_silo": args.test_rows,
        "eval_metrics": list(mc.reported_metrics()),
        "rounds": int(meta["rounds"]),
        "models_left_out": len(meta["reasons"]),
        "wall_s": round(wall, 2),
        "setup_s": round(setup_s, 2),
        "checked_chunks": len(check),
        "max_rel_coef_diff": coef_diff,
        "max_rel_se_diff": se_diff,
        "max_abs_p_diff": p_diff,
        "statsmodels_s_per_model": round(sm_wall / len(check), 4),
        "causal_detected": int(np.sum(pvalues.iloc[causal] < 5e-8)),
        "reply_mb_per_silo_round": round(len(encode_frame(reply, {})) / 1e6, 2),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--test-rows", type=int, default=1_000)
    parser.add_argument("--strategy", choices=["logit", "ols", "both"], default="both")
    parser.add_argument("--check", type=int, default=20)
    parser.add_argument("--eval-metrics", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for strategy in ("logit", "ols") if args.strategy == "both" else (args.strategy,):
        print(json.dumps(measure(args, strategy)), flush=True)


if __name__ == "__main__":
    main()
