"""DP-SGD in the shared loop: per-row clipping, noise, Poisson batches, and that it learns."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.errors import ConfigError
from fedsilo.privacy import DifferentialPrivacyParams, epsilon_spent, plan_dpsgd
from fedsilo.privacy.accounting import DPSGDPlan
from fedsilo.privacy.dpsgd import PrivateSGD
from fedsilo.training import train_local

torch.set_num_threads(1)


def manual_plan(n_rows: int, **changes: float) -> DPSGDPlan:
    """A hand-made plan (noise and rate chosen by the test, not calibrated)."""
    plan = DPSGDPlan(
        noise_multiplier=0.0,
        sample_rate=1.0,
        steps=1,
        steps_per_epoch=1,
        local_epochs=1,
        rounds=1,
        max_grad_norm=1e9,
        epsilon=1.0,
        delta=1e-5,
        n_rows=n_rows,
    )
    return replace(plan, **changes)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_per_row_gradients_are_clipped_to_max_grad_norm() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(
        rng.standard_normal((6, 3)) * np.array([[1.0], [5], [20], [0.1], [3], [50]])
    )
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    net = tiny_net()
    reference = copy.deepcopy(net)
    bound = 0.5
    plan = manual_plan(6, max_grad_norm=bound)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with PrivateSGD(net, optimizer, plan, 6, torch.Generator().manual_seed(1)) as private:
        loss = private.batch_loss(F.cross_entropy, x, y, torch.arange(6))
        torch.autograd.backward(loss)
        samples = [p.grad_sample.detach().reshape(6, -1) for p in net.parameters()]
        per_row = torch.cat(samples, dim=1)
        # Opacus's per-row gradients are the gradients of each row's own loss.
        for i in range(6):
            reference.zero_grad()
            torch.autograd.backward(F.cross_entropy(reference(x[i : i + 1]), y[i : i + 1]))
            torch.testing.assert_close(per_row[i], flat_grad(reference))
        norms = per_row.norm(dim=1)
        assert (norms > bound).sum() >= 3  # the test exercises clipping
        clipped = per_row * torch.clamp(bound / (norms + 1e-6), max=1.0)[:, None]
        assert torch.all(clipped.norm(dim=1) <= bound + 1e-9)
        assert private.optimizer.pre_step()  # clip, (zero) noise, average
        grads = torch.cat([p.grad.flatten() for p in net.parameters()])
        torch.testing.assert_close(grads, clipped.sum(dim=0) / 6)
    assert not hasattr(next(net.parameters()), "grad_sample")


def flat_grad(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def test_without_noise_or_clipping_a_full_batch_step_is_plain_sgd() -> None:
    # q = 1, noise 0 and a bound no row reaches: DP-SGD must reduce to full-batch SGD,
    # data-free terms (FedProx's pull, a penalty) included, to rounding.
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((40, 3)))
    y = torch.from_numpy(rng.integers(0, 2, 40))
    results = []
    for privacy in (None, manual_plan(40, local_epochs=3, steps=3)):
        net = tiny_net()
        first = net[0]
        assert isinstance(first, nn.Linear)
        train_local(
            net,
            F.cross_entropy,
            x,
            y,
            learning_rate=0.3,
            momentum=0.5,
            epochs=3,
            batch_size=40,
            generator=torch.Generator().manual_seed(0),
            proximal_mu=0.7,
            regularizer=lambda first=first: 0.05 * (first.weight**2).sum(),
            privacy=privacy,
            privacy_generator=torch.Generator().manual_seed(0),
        )
        results.append(flat(net))
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-12)


def test_an_empty_poisson_batch_still_takes_a_noise_only_step() -> None:
    x = torch.zeros((5, 3), dtype=torch.float64)
    y = torch.zeros(5, dtype=torch.int64)
    net = tiny_net()
    before = flat(net)
    plan = manual_plan(5, sample_rate=1e-12, noise_multiplier=1.0, max_grad_norm=1.0)
    result = train_local(
        net,
        F.cross_entropy,
        x,
        y,
        learning_rate=1.0,
        epochs=1,
        batch_size=1,
        generator=torch.Generator(),
        privacy=plan,
        privacy_generator=torch.Generator().manual_seed(3),
    )
    assert result.steps == 1
    assert not torch.equal(flat(net), before)


def test_the_noise_comes_from_the_privacy_generator_only() -> None:
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.standard_normal((50, 3)))
    y = torch.from_numpy(rng.integers(0, 2, 50))
    plan = manual_plan(
        50, sample_rate=0.2, steps_per_epoch=5, steps=5, noise_multiplier=1.0, max_grad_norm=1.0
    )

    def train(noise_seed: int, shuffle_seed: int) -> torch.Tensor:
        net = tiny_net()
        train_local(
            net,
            F.cross_entropy,
            x,
            y,
            learning_rate=0.1,
            epochs=1,
            batch_size=10,
            generator=torch.Generator().manual_seed(shuffle_seed),
            privacy=plan,
            privacy_generator=torch.Generator().manual_seed(noise_seed),
        )
        return flat(net)

    torch.testing.assert_close(train(5, 0), train(5, 99))  # the session seed plays no part
    assert not torch.equal(train(5, 0), train(6, 0))


def test_a_plan_that_does_not_fit_the_data_is_refused() -> None:
    x = torch.zeros((10, 3), dtype=torch.float64)
    y = torch.zeros(10, dtype=torch.int64)

    def run(plan: DPSGDPlan, epochs: int = 1, **kwargs: object) -> None:
        train_local(
            tiny_net(),
            F.cross_entropy,
            x,
            y,
            learning_rate=0.1,
            epochs=epochs,
            batch_size=2,
            generator=torch.Generator(),
            privacy=plan,
            **kwargs,  # type: ignore[arg-type]
        )

    with pytest.raises(ConfigError, match="made for 11 training rows, but the data has 10"):
        run(manual_plan(11))
    with pytest.raises(ConfigError, match="made for 1 local epoch"):
        run(manual_plan(10), epochs=2)
    with pytest.raises(ConfigError, match="cannot combine epoch_rows with privacy"):
        run(manual_plan(10), epoch_rows=lambda g: torch.arange(10))


# ------------------------------------------------------------- learning under DP


ROWS, BATCH, ROUNDS = 2000, 100, 4


@pytest.fixture(scope="module")
def tutorial() -> dict[str, torch.Tensor]:
    frames = make_frames(seed=0)
    train, test = frames["train_silo0"].iloc[:ROWS], frames["test"]
    return {
        "x": torch.tensor(train[FEATURES].to_numpy(), dtype=torch.float32),
        "y": torch.tensor(train["y"].to_numpy()),
        "x_test": torch.tensor(test[FEATURES].to_numpy(), dtype=torch.float32),
        "y_test": torch.tensor(test["y"].to_numpy()),
    }


def train_tutorial_net(
    data: dict[str, torch.Tensor], plan: DPSGDPlan | None, noise_seed: int
) -> tuple[float, torch.Tensor]:
    """The seed tutorial's network, ROUNDS rounds of one epoch; (test accuracy, weights)."""
    torch.manual_seed(23)
    net = nn.Sequential(
        nn.Linear(15, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
        nn.Linear(6, 2),
    )  # fmt: skip
    for server_round in range(1, ROUNDS + 1):
        train_local(
            net,
            F.cross_entropy,
            data["x"],
            data["y"],
            learning_rate=0.2,
            epochs=1,
            batch_size=BATCH,
            generator=torch.Generator().manual_seed(server_round),
            privacy=plan,
            privacy_generator=torch.Generator().manual_seed(1000 * noise_seed + server_round),
        )
    with torch.no_grad():
        accuracy = float((net(data["x_test"]).argmax(1) == data["y_test"]).float().mean())
    return accuracy, flat(net)


def test_dpsgd_learns_at_epsilon_4_and_is_noisier_at_epsilon_half(
    tutorial: dict[str, torch.Tensor],
) -> None:
    majority = max(
        float(tutorial["y_test"].float().mean()), 1 - float(tutorial["y_test"].float().mean())
    )
    clear_accuracy, _ = train_tutorial_net(tutorial, None, 0)
    runs = {}
    for epsilon in (4.0, 0.5):
        plan = plan_dpsgd(
            DifferentialPrivacyParams(epsilon=epsilon, max_grad_norm=7),
            n_rows=ROWS,
            batch_size=BATCH,
            rounds=ROUNDS,
            local_epochs=1,
        )
        assert epsilon_spent(plan, plan.steps) <= epsilon
        runs[epsilon] = [train_tutorial_net(tutorial, plan, seed) for seed in (1, 2)]
    accuracies = {eps: [acc for acc, _ in run] for eps, run in runs.items()}
    spreads = {eps: float((run[0][1] - run[1][1]).norm()) for eps, run in runs.items()}
    # The data's Bayes accuracy is ~0.89 and logistic regression reaches ~0.82; majority ~0.5.
    assert clear_accuracy > 0.75
    assert min(accuracies[4.0]) > majority + 0.25
    assert min(accuracies[4.0]) > clear_accuracy - 0.05
    # Eight times less budget, ~3x the noise: two noise draws land much further apart.
    assert spreads[0.5] > 1.5 * spreads[4.0]
    assert np.mean(accuracies[0.5]) < np.mean(accuracies[4.0])
