"""train_local with a model_config ``optimizer``: the same steps as torch's loop by hand."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedsilo.config import OptimizerConfig
from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting import DPSGDPlan
from fedsilo.training import train_local
from fedsilo.training.optimizers import PlainSGD, plain_sgd

torch.set_num_threads(1)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((40, 3)))
    y = torch.from_numpy(rng.integers(0, 2, 40))
    return x, y


def network() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


@pytest.mark.parametrize(
    ("section", "torch_class", "arguments"),
    [
        ({"name": "Adam", "params": {"learning_rate": 0.05}}, torch.optim.Adam, {"lr": 0.05}),
        (
            {"name": "optim.Adadelta", "params": {"lr": 1, "rho": 0.8}},
            torch.optim.Adadelta,
            {"lr": 1.0, "rho": 0.8},
        ),
        (
            {"name": "rmsprop", "params": {"lr": 0.01, "momentum": 0.5, "centered": True}},
            torch.optim.RMSprop,
            {"lr": 0.01, "momentum": 0.5, "centered": True},
        ),
        (
            {"name": "AdamW", "params": {"lr": 0.02, "betas": [0.8, 0.99]}},
            torch.optim.AdamW,
            {"lr": 0.02, "betas": (0.8, 0.99)},
        ),
        ({"name": "Adagrad", "params": {"lr": 0.1}}, torch.optim.Adagrad, {"lr": 0.1}),
        (
            {"name": "SGD", "params": {"lr": 0.1, "momentum": 0.9, "nesterov": True}},
            torch.optim.SGD,
            {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        ),
    ],
)
def test_a_configured_optimizer_is_torchs_loop_bit_for_bit(
    section: dict[str, Any], torch_class: type[torch.optim.Optimizer], arguments: dict[str, Any]
) -> None:
    x, y = data()
    net, reference = network(), network()
    result = train_local(
        net,
        nn.CrossEntropyLoss(),
        x,
        y,
        optimizer=OptimizerConfig.model_validate(section),
        epochs=2,
        batch_size=16,
        generator=torch.Generator().manual_seed(9),
    )

    optimizer = torch_class(reference.parameters(), **arguments)
    generator = torch.Generator().manual_seed(9)
    for _ in range(2):
        for rows in torch.split(torch.randperm(40, generator=generator), 16):
            optimizer.zero_grad()
            torch.autograd.backward(nn.CrossEntropyLoss()(reference(x[rows]), y[rows]))
            optimizer.step()
    for key, value in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    assert result.steps == 6


def test_lbfgs_steps_through_the_closure_and_reaches_the_least_squares_fit() -> None:
    # One full batch, strong-Wolfe LBFGS: the linear least-squares fit (numpy's lstsq).
    rng = np.random.default_rng(0)
    features = rng.standard_normal((60, 3))
    target = features @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(60)
    module = nn.Linear(3, 1).double()
    config = OptimizerConfig.model_validate(
        {
            "name": "LBFGS",
            "params": {
                "lr": 1,
                "max_iter": 200,
                "tolerance_grad": 1e-12,
                "tolerance_change": 1e-15,
                "line_search_fn": "strong_wolfe",
            },
        }
    )
    result = train_local(
        module,
        nn.MSELoss(),
        torch.from_numpy(features),
        torch.from_numpy(target).reshape(-1, 1),
        optimizer=config,
        epochs=1,
        batch_size=60,
        generator=torch.Generator().manual_seed(0),
    )
    design = np.column_stack([np.ones(60), features])
    expected, *_ = np.linalg.lstsq(design, target, rcond=None)
    fitted = np.r_[module.bias.detach().numpy(), module.weight.detach().numpy().ravel()]
    np.testing.assert_allclose(fitted, expected, atol=1e-8)
    # The reported loss is the batch's at the start weights, before the step.
    assert result.train_loss > float(np.mean((design @ expected - target) ** 2))


def test_learning_rate_and_optimizer_are_exclusive() -> None:
    x, y = data()
    config = OptimizerConfig.model_validate({"name": "Adam"})
    common: dict[str, Any] = {"epochs": 1, "batch_size": 8, "generator": torch.Generator()}
    with pytest.raises(ConfigError, match="not both"):
        train_local(
            network(), nn.CrossEntropyLoss(), x, y, learning_rate=0.1, optimizer=config, **common
        )
    with pytest.raises(ConfigError, match="not neither"):
        train_local(network(), nn.CrossEntropyLoss(), x, y, **common)


def test_lbfgs_is_refused_under_dp_sgd() -> None:
    x, y = data()
    plan = DPSGDPlan(
        epsilon=1.0,
        delta=1e-5,
        max_grad_norm=1.0,
        noise_multiplier=1.0,
        sample_rate=0.2,
        steps=5,
        steps_per_epoch=5,
        local_epochs=1,
        rounds=1,
        n_rows=40,
    )
    with pytest.raises(ConfigError, match="LBFGS cannot train under DP-SGD"):
        train_local(
            network(),
            nn.CrossEntropyLoss(),
            x,
            y,
            optimizer=OptimizerConfig.model_validate({"name": "LBFGS"}),
            epochs=1,
            batch_size=8,
            generator=torch.Generator(),
            privacy=plan,
        )


@pytest.mark.parametrize(
    "arguments",
    [
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.01},
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.001},
        {"lr": 0.1, "momentum": 0.2, "maximize": True},
    ],
)
def test_plain_sgd_is_torchs_sgd_bit_for_bit(arguments: dict[str, Any]) -> None:
    x, y = data()
    net, reference = network(), network()
    plain = plain_sgd(arguments, list(net.parameters()))
    assert isinstance(plain, PlainSGD)
    optimizer = torch.optim.SGD(reference.parameters(), **arguments)
    for rows in torch.split(torch.randperm(40, generator=torch.Generator().manual_seed(4)), 8):
        for module, step in ((net, plain), (reference, optimizer)):

            def closure(module: nn.Module = module, rows: torch.Tensor = rows) -> float:
                module.zero_grad()
                loss = nn.CrossEntropyLoss()(module(x[rows]), y[rows])
                torch.autograd.backward(loss)
                return float(loss.item())

            step.step(closure)
    for key, value in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


@pytest.mark.parametrize(
    "arguments",
    [
        {"lr": 0.1, "foreach": True},  # another kernel: torch's own SGD runs it
        {"lr": -0.1},  # refused by torch: build_optimizer reports it
        {"lr": 0.1, "nesterov": True},  # nesterov without momentum: likewise
    ],
)
def test_plain_sgd_leaves_other_arguments_to_torch(arguments: dict[str, Any]) -> None:
    assert plain_sgd(arguments, list(network().parameters())) is None


def test_sgd_training_never_imports_torch_dynamo() -> None:
    # torch.optim's first use imports torch._dynamo (1.5 s, 70 MB per client process).
    script = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from fedsilo.config import OptimizerConfig\n"
        "from fedsilo.training import train_local\n"
        "net = nn.Linear(3, 2)\n"
        "x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))\n"
        "for section in ({'name': 'SGD', 'params': {'lr': 0.1, 'momentum': 0.5}}, None):\n"
        "    config = OptimizerConfig.model_validate(section) if section else None\n"
        "    train_local(net, nn.CrossEntropyLoss(), x, y, epochs=1, batch_size=8,\n"
        "                generator=torch.Generator(), optimizer=config,\n"
        "                learning_rate=None if config else 0.1)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
