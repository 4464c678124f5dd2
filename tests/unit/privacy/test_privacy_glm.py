"""glm under differential privacy: the Newton statistics' noise and sensitivity, the private
Newton and sgd fits against the pooled statsmodels fit, and the seed tutorial config through
the real engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch

from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import get_package
from fedsilo.http import ApiClient
from fedsilo.packages.glm import GLMExecutor, GLMModel
from fedsilo.packages.glm.private_newton import RELEASES_PER_ROUND, PrivateNewton
from fedsilo.privacy import DifferentialPrivacyParams, gaussian_noise_for, plan_gaussian
from fedsilo.privacy.newton import clipped_second_order_sums
from fedsilo.regression.newton import row_terms
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.wire import SessionStatus, decode_frame

torch.set_num_threads(1)

PACKAGE = get_package("glm")
PREDICTORS = ["x0", "x1", "x2", "x3"]
BETA = np.array([0.3, 0.5, -0.25, 0.1, 0.0])
SIZES = (500, 2000, 7000)


def draw_silos(task: str, seed: int = 0) -> list[pd.DataFrame]:
    """Three silos of SIZES rows, shifted predictors, a ``task`` target from BETA."""
    rng = np.random.default_rng(seed)
    frames = []
    for n, shift in zip(SIZES, (-0.5, 0.0, 0.4), strict=True):
        x = rng.normal(shift, 1.0, size=(n, len(PREDICTORS)))
        eta = BETA[0] + x @ BETA[1:]
        frame = pd.DataFrame(x, columns=PREDICTORS)
        if task == "logistic":
            frame["y"] = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(float)
        else:
            frame["y"] = rng.poisson(np.exp(eta)).astype(float)
        frames.append(frame)
    return frames


def model_config(task: str, **dp: float) -> dict[str, Any]:
    return {
        "model": {"params": {"input_size": len(PREDICTORS)}},
        "ml_task": {"type": task, "params": {"alpha": 0, "l1_ratio": 0}},
        "differential_privacy_params": dp,
    }


DATA_CONFIG = {"predictors": PREDICTORS, "target": "y"}


def federate(
    config: dict[str, Any], frames: Sequence[pd.DataFrame], num_rounds: int
) -> tuple[GLMModel, InProcessContext]:
    mc, dc = PACKAGE.parse_configs(config, DATA_CONFIG)
    executors = {
        f"silo{i}": GLMExecutor(mc, dc, LocalDataset(frame, None, 256))
        for i, frame in enumerate(frames)
    }
    ctx = InProcessContext(executors, num_rounds, package_name="glm")
    PACKAGE.workflow(ctx, mc, dc)
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    return GLMModel(mc, dc, arrays, meta), ctx


def pooled_fit(task: str, frames: Sequence[pd.DataFrame]) -> Any:
    pooled = pd.concat(frames, ignore_index=True)
    family = sm.families.Binomial() if task == "logistic" else sm.families.Poisson()
    return sm.GLM(pooled["y"], sm.add_constant(pooled[PREDICTORS]), family=family).fit()


# ---------------------------------------------------------------- the mechanism


def private_newton(task: str, **dp: float) -> PrivateNewton:
    mc, dc = PACKAGE.parse_configs(model_config(task, **dp), DATA_CONFIG)
    executor = GLMExecutor(mc, dc, LocalDataset(draw_silos(task)[1], None, 256))
    return PrivateNewton(DifferentialPrivacyParams(**dp), executor.family, executor.train)


def test_the_noise_has_the_calibrated_scale() -> None:
    silo = private_newton("logistic", epsilon=2.0, max_grad_norm=3.0, max_hessian_norm=1.5)
    plan = plan_gaussian(
        silo.params, n_rows=silo.data.num_rows, rounds=5, releases_per_round=RELEASES_PER_ROUND
    )
    sigma_g = gaussian_noise_for(3.0, 2.0, plan.delta, 5 * RELEASES_PER_ROUND)
    assert plan.sigma(3.0) == pytest.approx(sigma_g)
    beta = BETA.copy()
    terms = row_terms(silo.family, silo.data, beta)
    design = np.column_stack([np.ones(silo.data.num_rows), silo.data.features])
    exact = clipped_second_order_sums(
        design,
        terms.gradient_scale,
        terms.fisher_weight,
        max_vector_norm=3.0,
        max_matrix_norm=1.5,
    )
    rng = np.random.default_rng(0)
    draws = [silo.statistics(beta, plan.noise_multiplier, rng) for _ in range(400)]
    gradient_noise = np.stack([d.gradient for d in draws]) - exact.vector
    fisher_noise = np.stack([d.fisher for d in draws]) - exact.matrix
    upper = np.triu_indices(5)
    # 400 draws: the sample std has a standard error of 3.5 %; 10 % is ~3 standard errors.
    np.testing.assert_allclose(gradient_noise.std(axis=0), plan.sigma(3.0), rtol=0.1)
    np.testing.assert_allclose(
        fisher_noise[:, upper[0], upper[1]].std(axis=0), plan.sigma(1.5), rtol=0.1
    )
    np.testing.assert_allclose(gradient_noise.mean(axis=0), 0.0, atol=4 * plan.sigma(3.0) / 20)
    np.testing.assert_array_equal(fisher_noise, np.swapaxes(fisher_noise, 1, 2))


def test_one_row_moves_the_clipped_sums_by_at_most_the_bounds() -> None:
    rng = np.random.default_rng(1)
    design = np.column_stack(
        [np.ones(300), rng.standard_normal((300, 3)) * rng.uniform(0.1, 20, (300, 1))]
    )
    a = rng.standard_normal(300) * 10
    b = rng.uniform(0, 5, 300)
    bounds = {"max_vector_norm": 2.0, "max_matrix_norm": 3.0}
    full = clipped_second_order_sums(design, a, b, **bounds)
    for i in range(0, 300, 7):
        keep = np.arange(300) != i
        without = clipped_second_order_sums(design[keep], a[keep], b[keep], **bounds)
        assert np.linalg.norm(full.vector - without.vector) <= 2.0 + 1e-9
        assert np.linalg.norm(full.matrix - without.matrix) <= 3.0 + 1e-9  # Frobenius


def test_the_client_refuses_exact_releases_and_replays_its_last_round(tmp_path: Path) -> None:
    mc, dc = PACKAGE.parse_configs(
        model_config("logistic", epsilon=1, max_grad_norm=7), DATA_CONFIG
    )

    def silo() -> GLMExecutor:
        return GLMExecutor(mc, dc, LocalDataset(draw_silos("logistic")[0], None, 256))

    first = silo()
    with pytest.raises(TaskError, match="does not send target_summary"):
        first.handle("target_summary", {}, {})
    beta = {"beta": np.zeros(5)}
    with pytest.raises(TaskError, match="must carry 'num_rounds'"):
        first.handle("newton_stats", {"round": 1}, beta)
    # Through the client's mod chain: a re-asked round gets the identical release, from the
    # release-once mod, in this process and after a client restart (same state dir).
    stats_meta = {"round": 1, "num_rounds": 3, "start": True}
    ctx = InProcessContext({"silo0": first}, 3, state_dir=tmp_path)
    (reply,) = ctx.ask(ctx.joined, "newton_stats", beta, stats_meta, round=1)
    assert 0 < reply.meta["epsilon_spent"] < 1 and "train_loss" not in reply.meta
    assert np.isnan(reply.arrays["scalars"][0])  # the deviance is not released
    restarted = InProcessContext({"silo0": silo()}, 3, state_dir=tmp_path)
    for context in (ctx, restarted):
        (again,) = context.ask(context.joined, "newton_stats", beta, stats_meta, round=1)
        assert again.meta == reply.meta
        for name, array in reply.arrays.items():
            np.testing.assert_array_equal(again.arrays[name], array)
        assert context.replayed == [("silo0", "newton_stats", 1)]
    # A different question for round 1 reaches the executor, which refuses a second release.
    with pytest.raises(TaskError, match="Round 1 was released before"):
        ctx.ask(ctx.joined, "newton_stats", {"beta": np.ones(5)}, stats_meta, round=1)
    with pytest.raises(TaskError, match=r"trains rounds 1\.\.3 only"):
        first.handle("newton_stats", {"round": 4, "num_rounds": 3}, beta)
    assert first.handle("evaluate", {"round": 1}, beta)[0]["evaluated_on"] == "none"
    with pytest.raises(ConfigError, match="'delta'"):
        bad = model_config("logistic", epsilon=1, max_grad_norm=7, delta=0.01)
        GLMExecutor(
            *PACKAGE.parse_configs(bad, DATA_CONFIG),
            LocalDataset(draw_silos("logistic")[0], None, 8),
        )


def test_max_hessian_norm_is_for_the_newton_solver_only() -> None:
    config = model_config("logistic", epsilon=1, max_grad_norm=7, max_hessian_norm=2) | {
        "solver": "sgd",
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
    }
    with pytest.raises(ConfigError, match="max_hessian_norm applies to the newton solver only"):
        PACKAGE.parse_model_config(config)


# ------------------------------------------------------------------ private fits


@pytest.mark.parametrize(
    ("task", "dp", "tolerance"),
    [
        # The seed's max_grad_norm: no logistic row reaches it with these predictors.
        ("logistic", {"max_grad_norm": 7}, 0.3),
        # Poisson rows with large means need wider bounds to stay unclipped.
        ("poisson", {"max_grad_norm": 100, "max_hessian_norm": 1000}, 0.75),
    ],
)
def test_private_newton_at_large_epsilon_lands_on_the_pooled_fit(
    task: str, dp: dict[str, float], tolerance: float
) -> None:
    # Tolerance in standard errors of the pooled fit: the privacy noise must be small next to
    # the sampling noise. Measured over 20 runs at epsilon 1000: at most 0.09 (logistic) and
    # 0.32 (Poisson, which also carries a little clipping bias).
    frames = draw_silos(task)
    model, ctx = federate(model_config(task, epsilon=1000, **dp), frames, num_rounds=6)
    reference = pooled_fit(task, frames)
    error = np.abs(model.beta - reference.params.to_numpy()) / reference.bse.to_numpy()
    assert error.max() < tolerance, error
    spent = ctx.rounds[6][1]
    assert set(spent) == {"silo0", "silo1", "silo2"}
    assert all(990 <= m["epsilon_spent"] <= 1000 for m in spent.values())
    with pytest.raises(ConfigError, match="not available for a differentially private fit"):
        model.summary()


def test_private_sgd_reports_spending_and_learns() -> None:
    frames = draw_silos("logistic")
    config = model_config("logistic", epsilon=4, max_grad_norm=7) | {
        "solver": "sgd",
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.5, "momentum": 0.0}},
        "local_epochs": 1,
    }
    model, ctx = federate(config, frames, num_rounds=4)
    spent = [ctx.rounds[r][1]["silo2"]["epsilon_spent"] for r in range(1, 5)]
    assert spent == sorted(spent) and spent[-1] <= 4.0
    assert all("train_loss" not in m for m in ctx.rounds[4][1].values())
    reference = pooled_fit("logistic", frames)
    # DP-SGD from zeros in 4 rounds: the right signs and rough size, not the exact fit.
    np.testing.assert_allclose(model.beta[:4], reference.params.to_numpy()[:4], atol=0.15)
    final = {name: m["epsilon_spent"] for name, m in ctx.rounds[4][1].items()}
    assert model.meta["privacy"]["epsilon_spent"] == final


# -------------------------------------------------------------------- end to end


SEED_GLM: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "output_activation": "sigmoid"}},
    "balance_train_datasets": False,
    "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}},
    "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 7},
}


@pytest.fixture
def api(thread_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=30,
    ) as client:
        yield client


def run_client(
    server: Any, sid: str, name: str, train: str, test: str, results: dict[str, Any]
) -> None:
    api = ApiClient(server.url, server.token)
    runtime = ClientRuntime(api, sid, name, train, test, 64, poll_wait=5, on_event=lambda _: None)
    try:
        results[name] = runtime.run()
    except Exception as exc:  # reported to the test thread
        results[name] = exc
    finally:
        api.close()


def test_the_seed_glm_config_with_dp_runs_a_session_end_to_end(
    thread_server: Any, api: httpx.Client, tmp_path: Path
) -> None:
    frames = make_frames(seed=0)
    paths = {}
    for name, frame in (
        ("silo0", frames["train_silo0"].iloc[:2000]),
        ("silo1", frames["train_silo1"].iloc[:3000]),
        ("test", frames["test"].iloc[:1000]),
    ):
        paths[name] = str(tmp_path / f"{name}.csv")
        frame.to_csv(paths[name], index=False)
    body = {
        "name": "glm-dp",
        "package_name": "glm",
        "min_num_clients": 2,
        "num_rounds": 5,
        "model_config": SEED_GLM,
        "data_config": {"predictors": FEATURES, "target": "y"},
    }
    response = api.post("/sessions", json=body)
    assert response.status_code == 201, response.text
    sid = response.json()["id"]
    assert api.post(f"/sessions/{sid}/start").status_code == 200
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(
            target=run_client,
            args=(thread_server, sid, name, paths[name], paths["test"], results),
            daemon=True,
        )
        for name in ("silo0", "silo1")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {"silo0": SessionStatus.completed, "silo1": SessionStatus.completed}

    metrics = api.get(f"/sessions/{sid}/metrics").json()
    assert len(metrics["client_metrics"]) == 5
    for name in ("silo0", "silo1"):
        spent = [r[name]["epsilon_spent"] for r in metrics["client_metrics"]]
        assert spent == sorted(spent) and 0.95 * 4 <= spent[-1] <= 4.0
    # Logistic regression reaches ~0.82 on this data; majority is ~0.5.
    assert metrics["federated_metrics"][-1]["accuracy"] > 0.75
    _, header = decode_frame(api.get(f"/sessions/{sid}/model").content)
    privacy = header["meta"]["privacy"]
    assert privacy["epsilon"] == 4 and set(privacy["epsilon_spent"]) == {"silo0", "silo1"}
