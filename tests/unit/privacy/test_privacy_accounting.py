"""Privacy accounting: the params, the up-front calibration and the epsilon spent per round.

References: the spent epsilon is checked against the budget; the Gaussian calibration is
checked against OpenDP's independent zCDP accounting of the same mechanism.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from fedsilo.errors import ConfigError
from fedsilo.privacy import (
    DifferentialPrivacyParams,
    epsilon_spent,
    gaussian_noise_for,
    plan_dpsgd,
    plan_gaussian,
    resolve_delta,
)
from fedsilo.privacy.accounting import DPSGDPlan, noise_multiplier_for


def params(**values: Any) -> DifferentialPrivacyParams:
    return DifferentialPrivacyParams.model_validate({"max_grad_norm": 7, **values})


# ------------------------------------------------------------------------ params


@pytest.mark.parametrize(
    "raw",
    [
        {"epsilon": 4, "max_grad_norm": 7},  # the seed's FFNet and GLM tutorials
        {"epsilon": 1, "max_grad_norm": 7, "delta": 0.000001},  # the seed's reference example
    ],
)
def test_the_seed_dp_params_are_accepted(raw: dict[str, Any]) -> None:
    parsed = DifferentialPrivacyParams.model_validate(raw)
    assert parsed.epsilon == raw["epsilon"] and parsed.max_grad_norm == 7
    assert parsed.hessian_norm == 7  # defaults to max_grad_norm


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"epsilon": 0, "max_grad_norm": 7}, "epsilon"),
        ({"epsilon": -1, "max_grad_norm": 7}, "epsilon"),
        ({"epsilon": 1, "max_grad_norm": 0}, "max_grad_norm"),
        ({"epsilon": 1, "max_grad_norm": 7, "delta": 1}, "delta"),
        ({"epsilon": 1, "max_grad_norm": 7, "delta": 0}, "delta"),
        ({"epsilon": float("inf"), "max_grad_norm": 7}, "epsilon"),
        ({"max_grad_norm": 7}, "epsilon"),
        ({"epsilon": 1, "max_grad_norm": 7, "sigma": 2}, "sigma"),
    ],
)
def test_bad_params_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        DifferentialPrivacyParams.model_validate(raw)
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_default_delta_is_well_below_one_over_n() -> None:
    assert resolve_delta(params(epsilon=1), 500) == 1e-5
    assert resolve_delta(params(epsilon=1), 1_000_000) == pytest.approx(1e-7)
    assert resolve_delta(params(epsilon=1, delta=1e-6), 500) == 1e-6


def test_a_delta_not_below_one_over_n_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'delta'.*below 1 / n_rows = 0\.001.*Got 0\.01"):
        resolve_delta(params(epsilon=1, delta=0.01), 1000)


# -------------------------------------------------------------------- DP-SGD plans


PLANS = [
    # (epsilon, n_rows, batch_size, rounds, local_epochs)
    (4.0, 2000, 64, 5, 1),
    (0.5, 2000, 64, 5, 1),
    (1.0, 16000, 1024, 3, 2),
    (8.0, 300, 300, 4, 1),  # one full batch per epoch: no subsampling amplification
]


@pytest.fixture(scope="module")
def plans() -> list[DPSGDPlan]:
    return [
        plan_dpsgd(params(epsilon=e), n_rows=n, batch_size=b, rounds=r, local_epochs=le)
        for e, n, b, r, le in PLANS
    ]


def test_the_session_spends_its_budget_and_no_more(plans: list[DPSGDPlan]) -> None:
    for plan in plans:
        spent = epsilon_spent(plan, plan.steps)
        assert plan.epsilon * 0.95 <= spent <= plan.epsilon, plan


def test_the_plan_follows_the_config_and_row_count(plans: list[DPSGDPlan]) -> None:
    first = plans[0]
    assert first.sample_rate == 64 / 2000
    assert first.steps_per_epoch == 32  # ceil(2000 / 64)
    assert first.steps == 5 * 32 and first.steps_through(2) == 64
    assert first.expected_batch_size == pytest.approx(64)
    assert first.delta == 1e-5
    full = plans[3]
    assert (full.sample_rate, full.steps_per_epoch, full.steps) == (1.0, 1, 4)


def test_spending_grows_round_by_round_and_is_recomputable(plans: list[DPSGDPlan]) -> None:
    plan = plans[0]
    spent = [epsilon_spent(plan, plan.steps_through(r)) for r in range(plan.rounds + 1)]
    assert spent[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(spent))
    assert spent[-1] <= plan.epsilon
    # No state: a restarted client makes the same plan and reports the same numbers.
    again = plan_dpsgd(params(epsilon=4.0), n_rows=2000, batch_size=64, rounds=5, local_epochs=1)
    assert again == plan
    assert epsilon_spent(again, again.steps_through(3)) == spent[3]
    # Rounds past the plan spend nothing more: steps_through stops at the last round.
    assert plan.steps_through(plan.rounds + 3) == plan.steps


def test_more_budget_means_less_noise(plans: list[DPSGDPlan]) -> None:
    multipliers = [
        noise_multiplier_for(epsilon, 1e-5, 64 / 2000, 160) for epsilon in (0.5, 1, 2, 4, 8)
    ]
    assert all(a > b for a, b in itertools.pairwise(multipliers))
    assert plans[1].noise_multiplier == pytest.approx(multipliers[0])


def test_a_budget_no_noise_can_meet_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'epsilon'.*too small"):
        noise_multiplier_for(1e-7, 1e-5, 1.0, 10)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match="batch_size >= 1"):
        plan_dpsgd(params(epsilon=1), n_rows=10, batch_size=0, rounds=1, local_epochs=1)


# ------------------------------------------------------------------ Gaussian plans


def opendp_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon of ``releases`` Gaussian releases of sensitivity 1, accounted by OpenDP."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)
    release = dp.m.make_gaussian(*space, scale=noise_multiplier)
    composed = dp.c.make_composition([release] * releases)
    approximate = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(composed), delta)
    epsilon, _ = approximate.map(1.0)
    return float(epsilon)


@pytest.mark.parametrize(("epsilon", "rounds"), [(1.0, 10), (4.0, 5), (0.3, 20)])
def test_gaussian_calibration_agrees_with_opendp(epsilon: float, rounds: int) -> None:
    plan = plan_gaussian(params(epsilon=epsilon), n_rows=5000, rounds=rounds, releases_per_round=2)
    assert plan.steps == 2 * rounds
    reference = opendp_epsilon(plan.noise_multiplier, plan.steps, plan.delta)
    # OpenDP converts zCDP with the exact optimal order; Opacus's RDP grid can only be
    # looser, and by little: the budget holds under both accountants.
    assert reference <= epsilon_spent(plan, plan.steps) + 1e-9
    assert epsilon * 0.95 <= reference <= epsilon


def test_gaussian_noise_for_scales_with_the_sensitivity() -> None:
    unit = gaussian_noise_for(1.0, 1.0, 1e-5, 10)
    assert gaussian_noise_for(7.0, 1.0, 1e-5, 10) == pytest.approx(7.0 * unit)
    assert opendp_epsilon(unit, 10, 1e-5) <= 1.0
    with pytest.raises(ConfigError, match="sensitivity"):
        gaussian_noise_for(0.0, 1.0, 1e-5, 10)
