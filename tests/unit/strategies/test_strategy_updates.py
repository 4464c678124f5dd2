"""Each momentum / adaptive strategy against its paper's update written out in numpy.

Three rounds each, with different client models and unequal weights, so the moments carried
between rounds matter. FedProx (whose server side is FedAvg) is checked where it acts: the
proximal term in the clients' training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import Participant, Reply, get_package
from fedsilo.packages.ffnet import FFNetExecutor
from fedsilo.packages.ffnet.model import build_module, load_arrays, module_arrays
from fedsilo.strategies import get_strategy
from fedsilo.training import shuffle_seed, train_local
from fedsilo.wire import Arrays, DatasetSummary

torch.set_num_threads(1)
SUMMARY = DatasetSummary(train_rows=1, test_rows=0, columns=[])
ROUNDS = 3
SHAPES = {"w": (4, 3), "b": (3,)}


def client_rounds() -> list[list[tuple[Arrays, int]]]:
    """Per round, three clients' models (scattered around a drifting centre) and weights."""
    rng = np.random.default_rng(42)
    rounds = []
    for server_round in range(ROUNDS):
        centre = {k: rng.standard_normal(s) * 0.1 + 0.05 * server_round for k, s in SHAPES.items()}
        clients = [
            ({k: centre[k] + 0.02 * rng.standard_normal(s) for k, s in SHAPES.items()}, n)
            for n in (50, 200, 7)
        ]
        rounds.append(clients)
    return rounds


def as_replies(clients: list[tuple[Arrays, int]]) -> list[Reply]:
    return [
        Reply(Participant(f"p{i}", f"c{i}", SUMMARY), {"num_examples": n}, arrays)
        for i, (arrays, n) in enumerate(clients)
    ]


def weighted_mean(clients: list[tuple[Arrays, int]], key: str) -> np.ndarray:
    total = sum(n for _, n in clients)
    return sum(n * arrays[key] for arrays, n in clients) / total  # type: ignore[return-value]


def run_strategy(name: str, params: dict[str, Any], x0: Arrays) -> list[Arrays]:
    strategy = get_strategy(name, params)
    models, x = [], x0
    for clients in client_rounds():
        x = strategy.aggregate_fit(len(models) + 1, x, as_replies(clients))
        models.append(x)
    return models


def start() -> Arrays:
    rng = np.random.default_rng(7)
    return {k: rng.standard_normal(s) * 0.1 for k, s in SHAPES.items()}


def assert_rounds_equal(got: list[Arrays], expected: list[Arrays]) -> None:
    for server_round, (g, e) in enumerate(zip(got, expected, strict=True), start=1):
        for key in SHAPES:
            np.testing.assert_allclose(
                g[key], e[key], rtol=0, atol=1e-12, err_msg=f"{server_round} {key}"
            )


# ----------------------------------------------------------------------- FedAvgM


@pytest.mark.parametrize(
    ("lr", "beta", "nesterov"), [(1.0, 0.0, False), (0.7, 0.9, False), (1.3, 0.5, True)]
)
def test_fedavgm_is_heavy_ball_momentum_on_the_pseudo_gradient(
    lr: float, beta: float, nesterov: bool
) -> None:
    params = {"server_learning_rate": lr, "server_momentum": beta, "nesterov": nesterov}
    got = run_strategy("FedAvgM", params, start())

    # Hsu et al. 2019 (torch.optim.SGD's rule): g = x - avg; v = beta v + g;
    # d = g + beta v (Nesterov) or v; x <- x - lr d.
    expected, x = [], start()
    v = {k: np.zeros(s) for k, s in SHAPES.items()}
    for clients in client_rounds():
        new = {}
        for key in SHAPES:
            g = x[key] - weighted_mean(clients, key)
            v[key] = beta * v[key] + g
            d = g + beta * v[key] if nesterov else v[key]
            new[key] = x[key] - lr * d
        expected.append(new)
        x = new
    assert_rounds_equal(got, expected)


def test_fedavgm_with_defaults_is_fedavg() -> None:
    assert_rounds_equal(run_strategy("FedAvgM", {}, start()), run_strategy("FedAvg", {}, start()))


# --------------------------------------------------------- FedOpt family (Reddi et al.)

SecondMoment = Callable[[np.ndarray, np.ndarray, dict[str, float]], np.ndarray]

#: v_t from v_{t-1} and Delta_t^2, as printed in Algorithm 2 of arXiv:2003.00295
SECOND_MOMENTS: dict[str, SecondMoment] = {
    "FedAdagrad": lambda v, d2, p: v + d2,
    "FedAdam": lambda v, d2, p: p["beta_2"] * v + (1 - p["beta_2"]) * d2,
    "FedYogi": lambda v, d2, p: v - (1 - p["beta_2"]) * d2 * np.sign(v - d2),
    "FedOpt": lambda v, d2, p: p["beta_2"] * v + (1 - p["beta_2"]) * d2,
}

ADAPTIVE_CASES = [
    # the seed's defaults, written out
    ("FedAdagrad", {}, {"eta": 0.1, "beta_1": 0.0, "tau": 1e-3}),
    ("FedAdam", {}, {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    ("FedYogi", {}, {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    ("FedOpt", {}, {"eta": 0.1, "beta_1": 0.0, "beta_2": 0.0, "tau": 1e-3}),
    # and values where every term is of similar size (tau near |Delta|)
    *[
        (name, p, p)
        for name, p in [
            ("FedAdagrad", {"eta": 0.3, "beta_1": 0.5, "tau": 0.05}),
            ("FedAdam", {"eta": 0.05, "beta_1": 0.6, "beta_2": 0.7, "tau": 0.02}),
            ("FedYogi", {"eta": 0.05, "beta_1": 0.6, "beta_2": 0.7, "tau": 0.02}),
            ("FedOpt", {"eta": 0.2, "beta_1": 0.3, "beta_2": 0.8, "tau": 0.01}),
        ]
    ],
]


@pytest.mark.parametrize(("name", "params", "written"), ADAPTIVE_CASES)
def test_adaptive_strategies_follow_algorithm_2(
    name: str, params: dict[str, float], written: dict[str, float]
) -> None:
    got = run_strategy(name, params, start())

    eta, beta_1, tau = written["eta"], written["beta_1"], written["tau"]
    expected, x = [], start()
    m = {k: np.zeros(s) for k, s in SHAPES.items()}  # m_{-1} = 0
    v = {k: np.full(s, tau**2) for k, s in SHAPES.items()}  # v_{-1} = tau^2
    for clients in client_rounds():
        new = {}
        for key in SHAPES:
            delta = weighted_mean(clients, key) - x[key]
            m[key] = beta_1 * m[key] + (1 - beta_1) * delta
            v[key] = SECOND_MOMENTS[name](v[key], delta**2, written)
            new[key] = x[key] + eta * m[key] / (np.sqrt(v[key]) + tau)
        expected.append(new)
        x = new
    assert_rounds_equal(got, expected)
    # The rules differ: no two adaptive strategies give the same model at these params.
    assert not np.allclose(got[-1]["w"], run_strategy("FedAvg", {}, start())[-1]["w"])


def test_yogi_moves_v_by_a_fixed_step_where_adam_moves_by_a_fraction() -> None:
    # One coordinate, Delta^2 far above v: Adam jumps most of the way, Yogi adds
    # (1 - beta_2) Delta^2 -- the two rules really differ, the tests above are not vacuous.
    current = {"w": np.zeros(1)}
    replies = as_replies([({"w": np.array([2.0])}, 1)])
    adam = get_strategy("FedAdam", {"beta_2": 0.5, "tau": 1.0})
    yogi = get_strategy("FedYogi", {"beta_2": 0.5, "tau": 1.0})
    adam.aggregate_fit(1, current, replies)
    yogi.aggregate_fit(1, current, replies)
    assert adam.state_arrays()["v/w"][0] == 0.5 * 1.0 + 0.5 * 4.0
    assert yogi.state_arrays()["v/w"][0] == 1.0 + 0.5 * 4.0
    replies = as_replies([({"w": np.array([0.0])}, 1)])
    adam.aggregate_fit(2, current, replies)
    yogi.aggregate_fit(2, current, replies)
    assert adam.state_arrays()["v/w"][0] == 0.5 * 2.5
    assert yogi.state_arrays()["v/w"][0] == 3.0  # Delta = 0: sign(v - 0) * 0


def test_a_float32_model_gets_the_float64_update_rounded_once() -> None:
    x32 = {k: v.astype(np.float32) for k, v in start().items()}
    clients = client_rounds()[0]
    clients32 = [({k: a.astype(np.float32) for k, a in arrays.items()}, n) for arrays, n in clients]
    got = get_strategy("FedAdam", {}).aggregate_fit(1, x32, as_replies(clients32))
    for key in SHAPES:
        x = x32[key].astype(np.float64)
        delta = (
            weighted_mean(
                [
                    ({k: a.astype(np.float64) for k, a in arrays.items()}, n)
                    for arrays, n in clients32
                ],
                key,
            )
            - x
        )
        m, v = 0.1 * delta, 0.99 * 1e-6 + 0.01 * delta**2
        expected = (x + 0.1 * m / (np.sqrt(v) + 1e-3)).astype(np.float32)
        assert got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], expected, rtol=1e-7, atol=0)


# ------------------------------------------------------------------------ FedProx


def test_fedprox_local_solution_is_pulled_to_the_global_weights_exactly() -> None:
    # Full-batch gradient descent on mean squared error plus (mu/2)||theta - theta_0||^2
    # converges to the closed-form minimiser of that objective:
    #   (2/n A'A + mu I) theta = 2/n A'y + mu theta_0,   A = [features, 1] (``design``).
    rng = np.random.default_rng(1)
    n = 40
    features = rng.standard_normal((n, 2))
    y = features @ np.array([2.0, -1.0]) + 0.5 + 0.1 * rng.standard_normal(n)
    design = np.hstack([features, np.ones((n, 1))])
    theta0 = np.array([-1.0, 1.0, 0.0])

    distances = []
    for mu in (0.0, 0.5, 50.0):
        module = nn.Linear(2, 1).double()
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(theta0[:2].reshape(1, 2)))
            module.bias.fill_(theta0[2])
        lipschitz = np.linalg.eigvalsh(2 / n * design.T @ design).max() + mu
        train_local(
            module,
            nn.MSELoss(),
            torch.from_numpy(features),
            torch.from_numpy(y.reshape(-1, 1)),
            learning_rate=1.0 / lipschitz,
            epochs=500,
            batch_size=n,
            generator=torch.Generator().manual_seed(0),
            proximal_mu=mu,
        )
        theta = np.r_[module.weight.detach().numpy().ravel(), module.bias.item()]
        closed = np.linalg.solve(
            2 / n * design.T @ design + mu * np.eye(3), 2 / n * design.T @ y + mu * theta0
        )
        np.testing.assert_allclose(theta, closed, rtol=0, atol=1e-9)
        distances.append(np.linalg.norm(theta - theta0))
    # mu = 0 is least squares, far from theta_0; a large mu keeps the solution near it.
    assert distances[0] > 2.0
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.1 * distances[0]


def test_fedprox_term_in_the_ffnet_client_is_the_gradient_of_the_proximal_loss() -> None:
    # The ffnet client honours meta["proximal_mu"] and its update equals FedProx written the
    # way Flower's example writes it: the proximal term added to the loss, autograd for the
    # gradient. Bit for bit, since mu/2 * 2 (w - w0) is exact.
    package = get_package("ffnet")
    mc = package.parse_model_config(
        {
            "strategy": {"name": "FedProx", "params": {"proximal_mu": 0.3}},
            "model": {"params": {"input_size": 3, "hidden_layer_sizes": [4], "output_size": 2}},
            "ml_task": {"type": "classification"},
            "optimizer": {"name": "SGD", "params": {"learning_rate": 0.5, "momentum": 0.5}},
            "local_epochs": 2,
        }
    )
    dc = package.parse_data_config({"predictors": ["a", "b", "c"], "target": "y"})
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.standard_normal((30, 3)), columns=["a", "b", "c"])
    frame["y"] = (frame["a"] + frame["b"] > 0).astype(int)
    executor = FFNetExecutor(mc, dc, LocalDataset(frame, None, 8))
    strategy = get_strategy(mc.strategy.name, mc.strategy.params)
    start_weights = module_arrays(build_module(mc))

    reply, trained = executor.handle(
        "fit", {"round": 4, "local_epochs": 2, **strategy.fit_config(4)}, start_weights
    )

    net = build_module(mc)
    assert not load_arrays(net, start_weights)
    anchor = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.5)
    x = torch.from_numpy(frame[["a", "b", "c"]].to_numpy(np.float32).copy())
    y = torch.from_numpy(frame["y"].to_numpy(np.int64).copy())
    generator = torch.Generator().manual_seed(shuffle_seed(mc.seed, 4))
    for _ in range(2):
        for rows in torch.split(torch.randperm(30, generator=generator), 8):
            optimizer.zero_grad()
            loss = nn.CrossEntropyLoss()(net(x[rows]), y[rows])
            proximal = sum(
                ((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor, strict=True)
            )
            (loss + 0.3 / 2 * proximal).backward()
            optimizer.step()
    for key, value in module_arrays(net).items():
        np.testing.assert_array_equal(trained[key], value, err_msg=key)

    plain = executor.handle("fit", {"round": 4, "local_epochs": 2}, start_weights)[1]
    assert not np.array_equal(plain["hidden0.weight"], trained["hidden0.weight"])
    assert reply["num_examples"] == 30
