"""Robust aggregation (strategies/robust.py): FedMedian, FedTrimmedAvg, FedClippedAvg.

Honest clients give exactly what numpy's median and scipy's ``trim_mean`` give on the
stacked models. One poisoned client of five -- weights times 1000, or a large sign-flipped
update -- moves FedAvg far, but each coordinate of the median and of the trimmed mean stays
within the honest clients' range, and FedClippedAvg stays within the stated bound
``||result - honest mean|| <= w_bad / sum(w) * (clip_norm + ||honest mean update||)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from fedsilo.errors import ConfigError
from fedsilo.federation import Participant, Reply
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.strategies import FedAvg, get_strategy
from fedsilo.strategies.robust import clip_factor
from fedsilo.wire import Arrays, DatasetSummary
from fedsilo.workflows import RoundPlan, Start, run_rounds

SUMMARY = DatasetSummary(train_rows=100, test_rows=0, columns=[])
GLOBAL = {"w": np.zeros((3, 4)), "b": np.zeros(4, dtype=np.float32)}


def reply(i: int, arrays: Arrays, num_examples: int = 10) -> Reply:
    person = Participant(id=f"p{i}", client_name=f"client-{i}", dataset=SUMMARY)
    return Reply(person, {"num_examples": num_examples}, arrays)


def honest_models(n: int = 4, seed: int = 0) -> list[Arrays]:
    """Honest updates: the global model moved by about 0.1 toward a common target of 1."""
    rng = np.random.default_rng(seed)
    return [
        {
            name: (ref + 0.1 + 0.01 * rng.standard_normal(ref.shape)).astype(ref.dtype)
            for name, ref in GLOBAL.items()
        }
        for _ in range(n)
    ]


def aggregate(name: str, models: list[Arrays], weights: list[int] | None = None, **params: Any):
    counts = weights or [10] * len(models)
    replies = [reply(i, m, n) for i, (m, n) in enumerate(zip(models, counts, strict=True))]
    return get_strategy(name, params).aggregate_fit(1, GLOBAL, replies)


def stacked(models: list[Arrays], name: str) -> np.ndarray:
    return np.stack([np.asarray(m[name], dtype=np.float64) for m in models])


# ------------------------------------------------------------------- references


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_fedmedian_is_numpys_coordinate_wise_median(n: int) -> None:
    models = honest_models(n, seed=n)
    result = aggregate("FedMedian", models)
    for name, ref in GLOBAL.items():
        expected = np.median(stacked(models, name), axis=0).astype(ref.dtype)
        np.testing.assert_array_equal(result[name], expected)
        assert result[name].dtype == ref.dtype


@pytest.mark.parametrize(("n", "beta"), [(5, 0.2), (10, 0.1), (10, 0.25), (7, 0.0), (3, 0.49)])
def test_fedtrimmedavg_is_scipys_trim_mean(n: int, beta: float) -> None:
    models = honest_models(n, seed=n)
    result = aggregate("FedTrimmedAvg", models, beta=beta)
    for name, ref in GLOBAL.items():
        expected = stats.trim_mean(stacked(models, name), beta, axis=0)
        # float64 sums in another order: a few ulps apart
        np.testing.assert_allclose(result[name], expected.astype(ref.dtype), rtol=1e-12, atol=0)


def test_median_and_trimmed_mean_count_every_client_once() -> None:
    models = honest_models(5)
    for name in ("FedMedian", "FedTrimmedAvg"):
        even = aggregate(name, models)
        skewed = aggregate(name, models, weights=[1, 1, 1, 1, 100])
        for key in GLOBAL:
            np.testing.assert_array_equal(even[key], skewed[key])


def test_fedclippedavg_without_clipping_is_fedavg() -> None:
    models = honest_models(4)
    weights = [3, 10, 7, 1]
    clipped = aggregate("FedClippedAvg", models, weights, clip_norm=1e6)
    plain = aggregate("FedAvg", models, weights)
    for name in GLOBAL:
        np.testing.assert_allclose(clipped[name], plain[name], rtol=1e-6, atol=1e-12)


def test_clipping_scales_the_update_to_clip_norm_over_the_whole_model() -> None:
    update = {"w": np.full((3, 4), 3.0), "b": np.full(4, 4.0, dtype=np.float32)}
    norm = np.sqrt(12 * 9 + 4 * 16)
    assert clip_factor(GLOBAL, update, 2.0) == pytest.approx(2.0 / norm)
    assert clip_factor(GLOBAL, update, 100.0) == 1.0
    result = aggregate("FedClippedAvg", [update], clip_norm=2.0)
    moved = np.sqrt(sum(np.sum(np.asarray(result[k], np.float64) ** 2) for k in GLOBAL))
    assert moved == pytest.approx(2.0, rel=1e-6)
    # the median of one clipped update is that update
    median = aggregate("FedMedian", [update], clip_norm=2.0)
    for name in GLOBAL:
        np.testing.assert_allclose(median[name], result[name], rtol=1e-6)


def test_clipped_median_is_the_median_of_the_clipped_models() -> None:
    models = honest_models(5)
    models[0] = {k: v * 50 for k, v in models[0].items()}
    result = aggregate("FedMedian", models, clip_norm=0.3)
    clipped = []
    for m in models:
        f = clip_factor(GLOBAL, m, 0.3)
        clipped.append({k: np.asarray(m[k], np.float64) * f for k in GLOBAL})
    for name, ref in GLOBAL.items():
        expected = np.median(stacked(clipped, name), axis=0).astype(ref.dtype)
        np.testing.assert_allclose(result[name], expected, rtol=1e-6)


def test_integer_arrays_take_the_statistic_unclipped_and_rounded() -> None:
    current = {"w": np.zeros(2), "count": np.zeros(2, dtype=np.int64)}
    models = [{"w": np.full(2, 10.0), "count": np.array([k, 10 * k])} for k in (1, 2, 9)]
    replies = [reply(i, m) for i, m in enumerate(models)]
    result = get_strategy("FedMedian", {"clip_norm": 1.0}).aggregate_fit(1, current, replies)
    np.testing.assert_array_equal(result["count"], [2, 20])
    assert result["count"].dtype == np.int64
    np.testing.assert_allclose(result["w"], np.full(2, 1 / np.sqrt(2)))


# ---------------------------------------------------------------- one poisoned client


def poisoned(kind: str) -> list[Arrays]:
    honest = honest_models(4)
    if kind == "scaled x1000":
        bad = {k: (v * 1000).astype(v.dtype) for k, v in honest[0].items()}
    else:  # a sign-flipped update 1000 times as long as an honest one
        bad = {
            k: (GLOBAL[k] - 1000 * (v - GLOBAL[k])).astype(v.dtype) for k, v in honest[0].items()
        }
    return [*honest, bad]


def distance(a: Arrays, b: Arrays) -> float:
    return float(np.sqrt(sum(np.sum((np.asarray(a[k], np.float64) - b[k]) ** 2) for k in GLOBAL)))


@pytest.mark.parametrize("attack", ["scaled x1000", "sign-flipped"])
def test_one_poisoned_client_of_five_moves_fedavg_far(attack: str) -> None:
    models = poisoned(attack)
    honest_mean = aggregate("FedAvg", models[:4])
    # the poisoned client moves the mean by a fifth of its ~100-long (or 1000x) update
    assert distance(aggregate("FedAvg", models), honest_mean) > 20


@pytest.mark.parametrize("attack", ["scaled x1000", "sign-flipped"])
@pytest.mark.parametrize(("name", "params"), [("FedMedian", {}), ("FedTrimmedAvg", {"beta": 0.2})])
def test_one_poisoned_client_of_five_cannot_leave_the_honest_range(
    attack: str, name: str, params: dict[str, Any]
) -> None:
    models = poisoned(attack)
    result = aggregate(name, models, **params)
    for key in GLOBAL:
        honest = stacked(models[:4], key)
        # Bound: with 1 of 5 poisoned the median (and the mean trimmed of 1 per end) of each
        # coordinate lies between the honest clients' smallest and largest value.
        value = np.asarray(result[key], np.float64)
        tol = 1e-6 if GLOBAL[key].dtype == np.float32 else 0.0
        assert np.all(value >= honest.min(axis=0) - tol) and np.all(
            value <= honest.max(axis=0) + tol
        )
    # so it stays within the honest spread (about 0.02 per coordinate) of their mean
    assert distance(result, aggregate("FedAvg", models[:4])) < 0.1


@pytest.mark.parametrize("attack", ["scaled x1000", "sign-flipped"])
def test_clipping_bounds_what_one_poisoned_client_can_do(attack: str) -> None:
    clip_norm = 1.0  # honest updates are ~0.4 long: never clipped
    models = poisoned(attack)
    weights = [10, 10, 10, 10, 10]
    result = aggregate("FedClippedAvg", models, weights, clip_norm=clip_norm)
    honest_mean = aggregate("FedAvg", models[:4])
    honest_update = distance(honest_mean, GLOBAL)
    # result - honest mean = w_bad / W * (clipped bad update - honest mean update)
    bound = 10 / 50 * (clip_norm + honest_update)
    assert distance(result, honest_mean) <= bound + 1e-6
    assert distance(result, honest_mean) < distance(aggregate("FedAvg", models), honest_mean) / 50


def test_a_poisoned_client_in_a_session_of_the_round_loop() -> None:
    """Through the in-process runner: 4 honest clients pull toward 1, one sends x1000."""

    class Client:
        def __init__(self, scale: float) -> None:
            self.scale = scale

        def handle(self, kind: str, meta: dict[str, Any], arrays: Arrays) -> Any:
            if kind == "fit":
                w = arrays["w"]
                return {"num_examples": 10}, {"w": ((w + 1) / 2 * self.scale).astype(w.dtype)}
            return {"test_loss": 0.0, "test_num_examples": 10}, {}

    executors = {f"c{i}": Client(1.0) for i in range(4)} | {"evil": Client(1000.0)}
    results = {}
    for name in ("FedAvg", "FedMedian", "FedTrimmedAvg"):
        ctx = InProcessContext(executors, num_rounds=3)
        plan = RoundPlan(
            strategy=get_strategy(name),
            start=lambda _: Start({"w": np.zeros(4, dtype=np.float32)}),
            seed=0,
        )
        results[name] = run_rounds(ctx, plan).arrays["w"]
    np.testing.assert_allclose(results["FedMedian"], np.full(4, 0.875), rtol=1e-6)
    np.testing.assert_allclose(results["FedTrimmedAvg"], np.full(4, 0.875), rtol=1e-6)
    assert np.all(results["FedAvg"] > 100)


# ---------------------------------------------------------------------- configs


def test_params_are_checked_naming_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"beta: .*less than 0.5 \(got 0.5\)"):
        get_strategy("FedTrimmedAvg", {"beta": 0.5})
    with pytest.raises(ConfigError, match=r"clip_norm: Field required"):
        get_strategy("FedClippedAvg")
    with pytest.raises(ConfigError, match=r"clip_norm: .*greater than 0"):
        get_strategy("FedMedian", {"clip_norm": -1})
    with pytest.raises(ConfigError, match=r"clip_norm: .*finite"):
        get_strategy("fedclippedavg", {"clip_norm": float("inf")})
    assert get_strategy("fedtrimmedavg").params.beta == 0.2  # type: ignore[attr-defined]
    assert not isinstance(get_strategy("FedMedian"), FedAvg)
