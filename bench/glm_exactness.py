"""How exact and how fast the federated GLM (Newton solver) is, per family.

For each family: three silos of unequal size (500 / 2,000 / 7,000 rows by default, predictors
shifted per silo so the silos are not IID), the glm package's real server workflow and client
executors in one process (every task and reply through the wire codec, no HTTP), and
statsmodels' GLM on the pooled rows as the reference. Prints one JSON line per family:

* ``max_rel_coef_diff`` -- max over coefficients of |fedsilo - statsmodels| / |statsmodels|;
* ``max_rel_se_diff`` -- the same for the standard errors of ``GLMModel.summary()``;
* ``rounds`` -- Newton rounds to converge (tol 1e-10); each round is one task per client;
* ``wall_s`` -- the federated fit's wall time in process (client computation, codec and the
  server's steps; the network adds one round trip per round, see bench/round_latency.py);
* ``statsmodels_wall_s`` -- statsmodels' IRLS on the pooled rows, for scale.

Usage: ``.venv/bin/python bench/glm_exactness.py [--scale 1] [--predictors 10] [--seed 0]``
(``--scale 10`` gives 5,000 / 20,000 / 70,000 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm

from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import get_package
from fedsilo.runners.inprocess import InProcessContext

LOG = sm.families.links.Log()
FAMILIES: dict[str, tuple[dict[str, Any], Any]] = {
    "logistic": ({}, sm.families.Binomial()),
    "normal": ({}, sm.families.Gaussian()),
    "poisson": ({}, sm.families.Poisson()),
    "gamma": ({}, sm.families.Gamma(LOG)),
    "inverseGaussian": ({}, sm.families.InverseGaussian(LOG)),
    "tweedie": ({"power": 1.5}, sm.families.Tweedie(var_power=1.5, link=LOG)),
}
SIZES = (500, 2000, 7000)


def draw(task: str, sizes: Sequence[int], k: int, rng: np.random.Generator) -> list[pd.DataFrame]:
    coef = rng.normal(0.0, 0.3 / np.sqrt(k), size=k)
    frames = []
    for n, shift in zip(sizes, np.linspace(-0.4, 0.4, len(sizes)), strict=True):
        x = rng.normal(shift, 1.0, size=(n, k))
        eta = 0.3 + x @ coef
        mu = np.exp(eta)
        if task == "logistic":
            y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(float)
        elif task == "normal":
            y = eta + rng.normal(size=n)
        elif task == "poisson":
            y = rng.poisson(mu).astype(float)
        elif task == "gamma":
            y = rng.gamma(2.0, mu / 2.0)
        elif task == "inverseGaussian":
            y = rng.wald(mu, 4.0)
        else:
            counts = rng.poisson(mu)
            y = np.array([rng.gamma(2.0, 0.5, size=c).sum() for c in counts])
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(k)])
        frame["y"] = y
        frames.append(frame)
    return frames


def measure(task: str, sizes: Sequence[int], k: int, seed: int) -> dict[str, Any]:
    params, sm_family = FAMILIES[task]
    frames = draw(task, sizes, k, np.random.default_rng(seed))
    predictors = [f"x{i}" for i in range(k)]
    package = get_package("glm")
    mc, dc = package.parse_configs(
        {
            "model": {"params": {"input_size": k}},
            "ml_task": {"type": task, "params": {"alpha": 0, "l1_ratio": 0, **params}},
        },
        {"predictors": predictors, "target": "y"},
    )
    executors = {
        f"silo{i}": package.executor(mc, dc, LocalDataset(frame, None, 1024))
        for i, frame in enumerate(frames)
    }
    ctx = InProcessContext(executors, num_rounds=100, package_name="glm")
    start = time.perf_counter()
    package.workflow(ctx, mc, dc)
    wall = time.perf_counter() - start
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    summary = package.export(mc, dc, arrays, meta).summary()

    pooled = pd.concat(frames)
    start = time.perf_counter()
    reference = sm.GLM(pooled["y"], sm.add_constant(pooled[predictors]), family=sm_family).fit(
        tol=1e-13, maxiter=500
    )
    sm_wall = time.perf_counter() - start
    params_ref = reference.params.to_numpy()
    return {
        "bench": "glm_exactness",
        "family": task,
        "link": mc.family().link,
        "rows": int(sum(sizes)),
        "silo_rows": list(sizes),
        "silos": len(sizes),
        "predictors": k,
        "max_rel_coef_diff": float(
            np.max(np.abs(summary["coef"].to_numpy() - params_ref) / np.abs(params_ref))
        ),
        "max_rel_se_diff": float(
            np.max(
                np.abs(summary["std_err"].to_numpy() - reference.bse.to_numpy())
                / reference.bse.to_numpy()
            )
        ),
        "rounds": int(meta["rounds"]),
        "converged": bool(meta["converged"]),
        "wall_s": round(wall, 4),
        "statsmodels_wall_s": round(sm_wall, 4),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply the silo sizes")
    parser.add_argument("--predictors", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [n * args.scale for n in SIZES]
    for task in FAMILIES:
        print(json.dumps(measure(task, sizes, args.predictors, args.seed)), flush=True)


if __name__ == "__main__":
    main()
