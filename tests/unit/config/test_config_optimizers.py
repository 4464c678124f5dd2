"""``optimizer``: every torch.optim optimizer by name, parameters checked without torch.

The static table the server validates with is compared with torch's own signatures here, so
a torch upgrade that adds an optimizer or a parameter fails this test.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from fedsilo.config import OptimizerConfig
from fedsilo.config.optimizers import (
    OPTIMIZER_DEFAULTS,
    REFUSED_OPTIMIZERS,
    TORCH_SWITCHES,
)
from fedsilo.errors import ConfigError
from fedsilo.training import build_optimizer
from fedsilo.wire import format_validation_error


def torch_optimizers() -> list[str]:
    names = []
    for name in torch.optim.__all__:
        cls = getattr(torch.optim, name)
        if (
            inspect.isclass(cls)
            and issubclass(cls, torch.optim.Optimizer)
            and cls is not torch.optim.Optimizer
        ):
            names.append(name)
    return names


def error_of(section: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        OptimizerConfig.model_validate(section)
    return format_validation_error(info.value)


def test_every_torch_optimizer_is_in_the_table_or_refused_with_a_reason() -> None:
    assert set(torch_optimizers()) == set(OPTIMIZER_DEFAULTS) | set(REFUSED_OPTIMIZERS)
    assert not set(OPTIMIZER_DEFAULTS) & set(REFUSED_OPTIMIZERS)
    # At least the ones the issue names.
    assert {"SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "RMSprop"} <= set(OPTIMIZER_DEFAULTS)


@pytest.mark.parametrize("name", sorted(OPTIMIZER_DEFAULTS))
def test_the_table_matches_the_torch_signature(name: str) -> None:
    signature = inspect.signature(getattr(torch.optim, name))
    torch_parameters = {
        p.name: p.default for p in signature.parameters.values() if p.name != "params"
    }
    configurable = {k: v for k, v in torch_parameters.items() if k not in TORCH_SWITCHES}
    assert configurable == OPTIMIZER_DEFAULTS[name]
    for parameter, default in OPTIMIZER_DEFAULTS[name].items():
        assert type(default) is type(torch_parameters[parameter]), parameter


def test_the_seed_spellings_parse_and_map_to_torch_names() -> None:
    seed = OptimizerConfig.model_validate(
        {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}}
    )
    assert seed.params.learning_rate == 0.2
    assert seed.params.torch_arguments() == {"lr": 0.2, "momentum": 0.0}
    # seed 002: optimizer = 'optim.Adadelta', lr = 1
    adadelta = OptimizerConfig.model_validate({"name": "optim.Adadelta", "params": {"lr": 1}})
    assert adadelta.name == "Adadelta"
    assert adadelta.params.torch_arguments() == {"lr": 1.0}
    for spelling in ("adam", "ADAM", "torch.optim.Adam"):
        assert OptimizerConfig.model_validate({"name": spelling}).name == "Adam"
    # Left out: torch's defaults (AdamW's lr 0.001, weight_decay 0.01).
    adamw = OptimizerConfig.model_validate({"name": "AdamW"})
    assert adamw.params.learning_rate == 0.001
    assert adamw.params.torch_arguments() == {}


def test_a_dumped_section_parses_back_to_the_same_optimizer() -> None:
    section = {"name": "adam", "params": {"lr": 0.01, "betas": [0.8, 0.9], "amsgrad": True}}
    config = OptimizerConfig.model_validate(section)
    dumped = config.model_dump(mode="json")
    assert dumped["name"] == "Adam"
    assert dumped["params"]["betas"] == [0.8, 0.9] and dumped["params"]["amsgrad"] is True
    again = OptimizerConfig.model_validate(dumped)
    assert again == config
    module = torch.nn.Linear(2, 1)
    assert build_optimizer(again, module.parameters()).defaults == (
        build_optimizer(config, module.parameters()).defaults
    )


def test_an_unknown_parameter_names_the_field_the_optimizer_and_its_parameters() -> None:
    message = error_of({"name": "Adam", "params": {"lr": 0.01, "momentum": 0.9}})
    assert message == (
        "params.momentum: torch.optim.Adam takes no parameter 'momentum'; the parameters of "
        "Adam are: learning_rate (or lr), betas, eps, weight_decay, amsgrad, "
        "decoupled_weight_decay (got 0.9)"
    )


def test_torch_implementation_switches_are_refused_with_the_reason() -> None:
    message = error_of({"name": "SGD", "params": {"foreach": True}})
    assert message.startswith(
        "params.foreach: foreach picks torch's kernel implementation, so fedsilo leaves it "
        "at torch's default; the parameters of SGD are: learning_rate (or lr), momentum"
    )
    assert "would ascend the package's loss" in error_of(
        {"name": "Adam", "params": {"maximize": True}}
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"name": "SGD", "params": {"learning_rate": 0.1, "lr": 0.1}},
            "params: give the learning rate once: learning_rate (the seed's name) and lr "
            "(torch's) are the same parameter",
        ),
        (
            {"name": "Adam", "params": {"betas": [0.9, 1.5]}},
            "params.betas.1: Input should be less than 1 (got 1.5)",
        ),
        (
            {"name": "RMSprop", "params": {"lr": -1}},
            "params.learning_rate: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            {"name": "LBFGS", "params": {"line_search_fn": "wolfe"}},
            "params.line_search_fn: Input should be 'strong_wolfe'",
        ),
        ({"name": "SparseAdam"}, "name: SparseAdam needs sparse gradients"),
        ({"name": "Muon"}, "name: Muon steps 2-D weight matrices only"),
        ({"name": "Adamm"}, "name: unknown optimizer; expected a torch.optim optimizer: Adadelta"),
    ],
)
def test_bad_sections_name_the_field_and_the_value(section: dict[str, Any], expected: str) -> None:
    assert expected in error_of(section)


@pytest.mark.parametrize("name", sorted(OPTIMIZER_DEFAULTS))
def test_every_listed_optimizer_builds_and_steps(name: str) -> None:
    module = torch.nn.Linear(3, 2)
    config = OptimizerConfig.model_validate({"name": name, "params": {"lr": 0.01}})
    optimizer = build_optimizer(config, module.parameters())
    assert type(optimizer) is getattr(torch.optim, name)
    assert optimizer.defaults["lr"] == 0.01
    before = module.weight.detach().clone()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))

    def closure() -> float:
        optimizer.zero_grad()
        loss = module(x).pow(2).mean()
        torch.autograd.backward(loss)
        return float(loss.item())

    optimizer.step(closure)
    assert not torch.equal(before, module.weight)


def test_torch_checks_that_the_table_cannot_express_are_config_errors() -> None:
    # Rprop needs 0 < etaminus < 1 < etaplus: a relation, checked by torch on the client.
    config = OptimizerConfig.model_validate({"name": "Rprop", "params": {"etas": [1.5, 1.2]}})
    with pytest.raises(ConfigError, match=r"torch.optim.Rprop refused model_config optimizer"):
        build_optimizer(config, torch.nn.Linear(2, 1).parameters())


def test_the_config_module_imports_no_torch() -> None:
    # The server validates configs at session creation and must not import torch.
    code = (
        "import sys, fedsilo.config, fedsilo.packages.ffnet.config, fedsilo.packages.glm.config;"
        "from fedsilo.config import OptimizerConfig;"
        "OptimizerConfig.model_validate({'name': 'Adam', 'params': {'lr': 0.1}});"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
