"""The shared local SGD loop against SGD written out by hand on a tiny linear model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsilo.errors import ConfigError
from fedsilo.training import train_local

torch.set_num_threads(1)


def linear(weight: list[float], bias: float) -> nn.Linear:
    module = nn.Linear(len(weight), 1).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([weight], dtype=torch.float64))
        module.bias.fill_(bias)
    return module


def params_of(module: nn.Linear) -> np.ndarray:
    """(w_1, ..., w_d, b) as one float64 vector."""
    return np.concatenate([module.weight.detach().numpy().ravel(), module.bias.detach().numpy()])


def test_one_step_equals_the_hand_written_step_exactly() -> None:
    # Dyadic numbers: every product and sum below is exact in float64, so the loop must
    # reproduce the hand computation bit for bit.
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    module = linear([0.25, -0.5], 0.125)
    result = train_local(
        module,
        nn.MSELoss(),
        x,
        y,
        learning_rate=0.0625,
        epochs=1,
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
    )

    w, b = np.array([0.25, -0.5]), 0.125
    features, t = x.numpy(), y.numpy().ravel()
    residual = features @ w + b - t
    grad_w = 2.0 / 2 * features.T @ residual  # d/dw mean((Xw + b - y)^2)
    grad_b = 2.0 / 2 * residual.sum()
    np.testing.assert_array_equal(
        params_of(module), np.r_[w - 0.0625 * grad_w, b - 0.0625 * grad_b]
    )
    assert result.train_loss == np.mean(residual**2)
    assert (result.num_examples, result.steps) == (2, 1)


def hand_sgd(
    features: np.ndarray,
    t: np.ndarray,
    theta: np.ndarray,
    orders: list[np.ndarray],
    batch_size: int,
    lr: float,
    momentum: float,
    mu: float,
) -> tuple[np.ndarray, float]:
    """Mini-batch SGD on the mean squared error of [features, 1] @ theta, with
    torch.optim.SGD's momentum rule and FedProx's proximal gradient mu * (theta - theta_0)."""
    design = np.hstack([features, np.ones((len(features), 1))])
    start = theta.copy()
    buffer: np.ndarray | None = None
    last_loss = math.nan
    for order in orders:
        loss_sum = 0.0
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            residual = design[rows] @ theta - t[rows]
            loss_sum += float(np.mean(residual**2)) * len(rows)
            grad = 2.0 / len(rows) * design[rows].T @ residual + mu * (theta - start)
            buffer = grad if buffer is None else momentum * buffer + grad
            theta = theta - lr * buffer
        last_loss = loss_sum / len(order)
    return theta, last_loss


@pytest.mark.parametrize(("momentum", "mu"), [(0.0, 0.0), (0.9, 0.0), (0.5, 0.7)])
def test_epochs_of_minibatches_with_momentum_and_proximal_term_match_by_hand(
    momentum: float, mu: float
) -> None:
    rng = np.random.default_rng(3)
    features = rng.standard_normal((7, 3))
    t = features @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(7)
    theta0 = np.array([0.1, 0.2, -0.3, 0.05])
    module = linear(list(theta0[:3]), float(theta0[3]))
    epochs, batch_size, lr = 3, 3, 0.05

    result = train_local(
        module,
        nn.MSELoss(),
        torch.from_numpy(features),
        torch.from_numpy(t.reshape(-1, 1)),
        learning_rate=lr,
        momentum=momentum,
        epochs=epochs,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(11),
        proximal_mu=mu,
    )

    same = torch.Generator().manual_seed(11)  # the loop's shuffles: one randperm per epoch
    orders = [torch.randperm(7, generator=same).numpy() for _ in range(epochs)]
    theta, loss = hand_sgd(features, t, theta0, orders, batch_size, lr, momentum, mu)
    np.testing.assert_allclose(params_of(module), theta, rtol=0, atol=1e-13)
    assert result.train_loss == pytest.approx(loss, rel=1e-13)
    assert (result.num_examples, result.steps) == (7, epochs * 3)  # batches of 3, 3, 1


def test_epoch_rows_chooses_the_rows_and_their_order() -> None:
    x = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    y = torch.ones(6, 1, dtype=torch.float64)
    seen: list[list[int]] = []

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((outputs - targets) ** 2).mean()

    def rows(generator: torch.Generator) -> torch.Tensor:
        chosen = torch.tensor([4, 1, 2])
        seen.append(chosen.tolist())
        return chosen

    module = linear([0.0, 0.0], 0.0)
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0][:, 0].tolist()))
    result = train_local(
        module,
        loss_fn,
        x,
        y,
        learning_rate=0.0,
        epochs=2,
        batch_size=2,
        generator=torch.Generator(),
        epoch_rows=rows,
    )
    # per epoch: the row choice, then the batches' first column (rows 4, 1 then row 2)
    assert seen == [[4, 1, 2], [8.0, 2.0], [4.0]] * 2
    assert (result.num_examples, result.steps, result.train_loss) == (3, 4, 1.0)


def test_without_proximal_term_it_is_the_plain_torch_loop_bit_for_bit() -> None:
    # The loop ffnet ran before it was shared, written out with torch.optim.SGD.
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((50, 4)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 50))
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    reference = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    reference.load_state_dict(net.state_dict())

    train_local(
        net,
        nn.CrossEntropyLoss(),
        x,
        y,
        learning_rate=0.1,
        momentum=0.9,
        epochs=2,
        batch_size=16,
        generator=torch.Generator().manual_seed(9),
    )

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(9)
    for _ in range(2):
        for rows in torch.split(torch.randperm(50, generator=generator), 16):
            optimizer.zero_grad()
            nn.CrossEntropyLoss()(reference(x[rows]), y[rows]).backward()
            optimizer.step()
    for key, value in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"learning_rate": -0.1},
            "'learning_rate' parameter of train_local must be >= 0. Got -0.1",
        ),
        ({"momentum": math.nan}, "'momentum' parameter of train_local must be >= 0. Got nan"),
        ({"proximal_mu": -1.0}, "'proximal_mu' parameter of train_local must be >= 0. Got -1.0"),
        ({"epochs": 0}, "'epochs' parameter of train_local must be >= 1. Got 0"),
        ({"batch_size": 0}, "'batch_size' parameter of train_local must be >= 1. Got 0"),
    ],
)
def test_bad_arguments_name_the_parameter_and_the_value(
    changes: dict[str, float], message: str
) -> None:
    arguments: dict[str, float] = {"learning_rate": 0.1, "epochs": 1, "batch_size": 1}
    arguments |= changes
    with pytest.raises(ConfigError) as info:
        train_local(
            linear([0.0], 0.0),
            nn.MSELoss(),
            torch.zeros(2, 1, dtype=torch.float64),
            torch.zeros(2, 1, dtype=torch.float64),
            learning_rate=arguments["learning_rate"],
            momentum=arguments.get("momentum", 0.0),
            proximal_mu=arguments.get("proximal_mu", 0.0),
            epochs=int(arguments["epochs"]),
            batch_size=int(arguments["batch_size"]),
            generator=torch.Generator(),
        )
    assert message in str(info.value)


def test_rows_of_x_and_y_must_agree() -> None:
    with pytest.raises(ConfigError, match=r"same number of rows\. Got 3 and 2"):
        train_local(
            linear([0.0], 0.0),
            nn.MSELoss(),
            torch.zeros(3, 1, dtype=torch.float64),
            torch.zeros(2, 1, dtype=torch.float64),
            learning_rate=0.1,
            epochs=1,
            batch_size=1,
            generator=torch.Generator(),
        )
