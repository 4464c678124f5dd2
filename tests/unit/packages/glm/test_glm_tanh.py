"""glm ``output_activation: "tanh"``: a single-layer tanh network with squared-error loss.

References on the same pooled rows:

* exactness: with one full-batch SGD step per client per round, FedAvg (weights = rows) of
  the clients' steps *is* one full-batch gradient step on the pooled rows, so R federated
  rounds equal R steps of a central torch ``Linear -> Tanh`` model trained with the same
  optimizer from the same start, to float64 rounding (checked to 1e-12);
* the optimum: the seed-style config (batches of 64, SGD with momentum, FedAvg, 20 rounds)
  lands within 0.02 of scipy's nonlinear least squares on ``tanh(X b)`` (measured: 0.006;
  Adam at lr 0.01: 0.006), and its federated test loss within 0.5 % of the optimum's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import least_squares  # type: ignore[import-untyped]

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.packages.glm.tanh import TanhOutput

# Small tensors: intra-op threads only contend (18 ms vs 1.4 ms a backward pass, loaded).
torch.set_num_threads(1)

PACKAGE = get_package("glm")
PREDICTORS = ["x0", "x1", "x2", "x3"]
DATA = {"predictors": PREDICTORS, "target": "y"}
_BETA = np.array([0.2, 0.8, -0.5, 0.3, 0.0])


def tanh_config(**changes: Any) -> dict[str, Any]:
    """The seed's GLM tutorial config with the tanh output it lists, on the sgd solver."""
    config: dict[str, Any] = {
        "strategy": {"name": "FedAvg", "params": {}},
        "model": {"params": {"input_size": 4, "output_activation": "tanh"}},
        "ml_task": {"type": "normal", "params": {"alpha": 0, "l1_ratio": 0}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}},
        "solver": "sgd",
    }
    config.update(changes)
    return config


def tanh_silos(sizes: tuple[int, ...] = (300, 800, 1500), seed: int = 0) -> list[pd.DataFrame]:
    """Non-IID silos with ``y = tanh(eta) + noise`` (sd 0.1) and an offset column."""
    rng = np.random.default_rng(seed)
    frames = []
    for n, shift in zip(sizes, (-0.4, 0.0, 0.3), strict=True):
        x = rng.normal(shift, 1.0, size=(n, len(PREDICTORS)))
        frame = pd.DataFrame(x, columns=PREDICTORS)
        frame["off"] = rng.normal(0.0, 0.2, n)
        eta = _BETA[0] + x @ _BETA[1:] + frame["off"].to_numpy()
        frame["y"] = np.tanh(eta) + rng.normal(0.0, 0.1, n)
        frames.append(frame)
    return frames


def pooled_least_squares(frame: pd.DataFrame, offset: str | None = None) -> np.ndarray:
    design = np.column_stack([np.ones(len(frame)), frame[PREDICTORS].to_numpy()])
    off = frame[offset].to_numpy() if offset else 0.0
    y = frame["y"].to_numpy()
    fit = least_squares(lambda b: np.tanh(design @ b + off) - y, np.zeros(5), xtol=1e-14)
    result: np.ndarray = fit.x
    return result


# ------------------------------------------------------------------------- config


def test_tanh_parses_under_sgd_with_the_normal_task() -> None:
    mc = PACKAGE.parse_model_config(tanh_config())
    assert mc.activation == "tanh"
    family = mc.family()
    assert isinstance(family, TanhOutput)
    assert family.loss_factor() == 1.0
    np.testing.assert_allclose(family.unit_deviance(np.array([0.5]), np.array([0.0])), [0.25])


def test_tanh_under_newton_is_refused_with_the_reason() -> None:
    config = tanh_config()
    del config["solver"]  # newton, the default
    with pytest.raises(ConfigError) as info:
        PACKAGE.parse_model_config(config)
    message = str(info.value)
    assert "model.params.output_activation: tanh is not the inverse of a link for any " in message
    assert "exponential family" in message
    assert "newton solver fits exponential-family GLMs exactly by IRLS" in message
    assert "set solver 'sgd' with ml_task.type 'normal'" in message
    assert '(got "tanh")' in message


def test_tanh_with_another_family_is_refused() -> None:
    config = tanh_config(ml_task={"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}})
    with pytest.raises(ConfigError, match="tanh trains with squared-error loss, which is "):
        PACKAGE.parse_model_config(config)


def test_the_newton_entry_points_refuse_a_tanh_model() -> None:
    mc = PACKAGE.parse_model_config(tanh_config())
    with pytest.raises(ConfigError, match="The newton solver cannot fit this model"):
        mc.newton_family()


# ----------------------------------------------------------------------- training


def central_gradient_descent(
    frame: pd.DataFrame, steps: int, learning_rate: float, momentum: float
) -> np.ndarray:
    """A central single-layer tanh model, full-batch, torch's SGD, from zeros."""
    x = torch.tensor(frame[PREDICTORS].to_numpy())
    off = torch.tensor(frame["off"].to_numpy())
    y = torch.tensor(frame["y"].to_numpy())
    linear = torch.nn.Linear(4, 1, dtype=torch.float64)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    for _ in range(steps):
        # A fresh optimizer per step, as each federated round starts one (no momentum
        # carried across rounds).
        optimizer = torch.optim.SGD(linear.parameters(), lr=learning_rate, momentum=momentum)
        optimizer.zero_grad()
        mu = torch.tanh(linear(x)[:, 0] + off)
        torch.autograd.backward((0.5 * (y - mu) ** 2).mean())
        optimizer.step()
    return np.r_[linear.bias.detach().numpy(), linear.weight.detach().numpy().ravel()]


def test_full_batch_fedavg_equals_central_training_on_the_pooled_rows(run_federated: Any) -> None:
    frames = tanh_silos()
    config = tanh_config(optimizer={"name": "SGD", "params": {"lr": 0.5, "momentum": 0.9}})
    fit = run_federated(config, {**DATA, "offset": "off"}, frames, num_rounds=15, batch_size=10_000)
    central = central_gradient_descent(pd.concat(frames), 15, 0.5, 0.9)
    np.testing.assert_allclose(fit.model.beta, central, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}},  # the seed's
        {"name": "Adam", "params": {"lr": 0.01}},
    ],
)
def test_the_seed_style_fit_lands_at_the_pooled_least_squares_optimum(
    run_federated: Any, optimizer: dict[str, Any]
) -> None:
    frames, tests = tanh_silos(), tanh_silos(seed=1)
    config = tanh_config(optimizer=optimizer)
    fit = run_federated(config, DATA, frames, tests=tests, num_rounds=20, batch_size=64)
    optimum = pooled_least_squares(pd.concat(frames))
    assert np.max(np.abs(fit.model.beta - optimum)) < 0.02

    pooled_test = pd.concat(tests)
    residual = pooled_test["y"].to_numpy() - fit.model.predict(pooled_test)
    federated, _ = fit.ctx.rounds[20]
    # The federated test loss is the pooled test MSE of the saved model, exactly.
    assert federated["loss"] == pytest.approx(float(np.mean(residual**2)), rel=1e-12)
    design = np.column_stack([np.ones(len(pooled_test)), pooled_test[PREDICTORS].to_numpy()])
    best = float(np.mean((pooled_test["y"].to_numpy() - np.tanh(design @ optimum)) ** 2))
    assert federated["loss"] == pytest.approx(best, rel=5e-3)


def test_a_tanh_model_exports_its_tanh_output(run_federated: Any) -> None:
    frames = tanh_silos()
    fit = run_federated(tanh_config(), DATA, frames, num_rounds=2, batch_size=256)
    model = fit.model
    rows = pd.concat(frames).head(50)
    eta = model.linear_predictor(rows)
    np.testing.assert_array_equal(model.predict(rows), np.tanh(eta))
    module = model.as_pytorch()
    assert isinstance(module.inverse_link, torch.nn.Tanh)
    with torch.no_grad():
        torch_mean = module(torch.tensor(rows[PREDICTORS].to_numpy()))[:, 0].numpy()
    np.testing.assert_allclose(torch_mean, model.predict(rows), rtol=1e-12)
    with pytest.raises(ConfigError, match="No scikit-learn estimator has a tanh output"):
        model.as_sklearn()
    with pytest.raises(ConfigError, match="predict_proba needs a logistic model"):
        model.predict_proba(rows)
    assert "link='atanh'" in repr(model)
