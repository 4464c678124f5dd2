"""FedAvg: the streamed weighted mean against numpy, sampling, params, errors."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import Participant, Reply
from fedsilo.strategies import STRATEGIES, FedAvg, get_strategy
from fedsilo.wire import DatasetSummary

SUMMARY = DatasetSummary(train_rows=1, test_rows=0, columns=[])


def participant(i: int) -> Participant:
    return Participant(id=f"p{i}", client_name=f"client-{i}", dataset=SUMMARY)


def reply(i: int, arrays: dict[str, np.ndarray], num_examples: Any) -> Reply:
    return Reply(participant=participant(i), meta={"num_examples": num_examples}, arrays=arrays)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_aggregate_equals_the_numpy_weighted_mean(dtype: type[np.floating[Any]]) -> None:
    rng = np.random.default_rng(0)
    shapes = {"w": (4, 3), "b": (3,), "scalar": ()}
    weights = [1, 7, 250, 3]
    clients = [
        {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
        for _ in weights
    ]
    current = {name: np.zeros(shape, dtype=dtype) for name, shape in shapes.items()}

    result = get_strategy("FedAvg", {}).aggregate_fit(
        1, current, [reply(i, a, n) for i, (a, n) in enumerate(zip(clients, weights, strict=True))]
    )

    for name in shapes:
        stacked = np.stack([c[name].astype(np.float64) for c in clients])
        expected = np.average(stacked, axis=0, weights=weights)
        assert result[name].dtype == dtype
        assert result[name].shape == shapes[name]
        if dtype == np.float64:
            np.testing.assert_allclose(result[name], expected, rtol=0, atol=1e-12)
        else:
            np.testing.assert_array_equal(result[name], expected.astype(dtype))


def test_integer_arrays_are_rounded_to_the_nearest_integer() -> None:
    current = {"count": np.zeros(2, dtype=np.int64)}
    replies = [
        reply(0, {"count": np.array([1, 10], dtype=np.int64)}, 1),
        reply(1, {"count": np.array([2, 20], dtype=np.int64)}, 3),
    ]
    result = FedAvg(FedAvg.params_type()).aggregate_fit(1, current, replies)
    assert result["count"].dtype == np.int64
    np.testing.assert_array_equal(result["count"], [2, 18])  # 1.75 -> 2, 17.5 -> 18


def test_aggregation_streams_without_holding_a_copy_per_client() -> None:
    n_clients, size = 12, 200_000  # 1.6 MB per float64 array
    current = {"w": np.zeros(size)}
    replies = [reply(i, {"w": np.full(size, float(i))}, i + 1) for i in range(n_clients)]
    strategy = get_strategy("FedAvg", {})

    tracemalloc.start()
    try:
        result = strategy.aggregate_fit(1, current, iter(replies))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    one_copy = size * 8
    # accumulator + one product temporary + the result: a few copies, not n_clients of them
    assert peak < 4 * one_copy, peak / one_copy
    expected = sum(i * (i + 1) for i in range(n_clients)) / sum(range(1, n_clients + 1))
    np.testing.assert_allclose(result["w"], expected, rtol=0, atol=1e-12)


def test_zero_weight_replies_count_for_nothing() -> None:
    current = {"w": np.zeros(2)}
    replies = [reply(0, {"w": np.ones(2)}, 5), reply(1, {"w": np.full(2, 100.0)}, 0)]
    result = get_strategy("FedAvg").aggregate_fit(1, current, replies)
    np.testing.assert_array_equal(result["w"], [1.0, 1.0])


@pytest.mark.parametrize(
    ("arrays", "num_examples", "message"),
    [
        ({"w": np.ones(2)}, None, "meta['num_examples'] as a number >= 0. Got None"),
        ({"w": np.ones(2)}, -3, "meta['num_examples'] >= 0. Got -3"),
        ({"w": np.ones(2)}, "12", "Got '12'"),
        ({"w": np.ones(3)}, 1, "array 'w' of shape (3,); expected (2,)"),
        ({"v": np.ones(2)}, 1, "missing arrays ['w'], unexpected arrays ['v']"),
    ],
)
def test_malformed_replies_are_refused_naming_the_client(
    arrays: dict[str, np.ndarray], num_examples: Any, message: str
) -> None:
    with pytest.raises(TaskError) as info:
        get_strategy("FedAvg").aggregate_fit(
            1, {"w": np.zeros(2)}, [reply(4, arrays, num_examples)]
        )
    assert "client-4" in str(info.value)
    assert message in str(info.value)


def test_no_replies_or_no_examples_cannot_be_aggregated() -> None:
    with pytest.raises(TaskError, match="no replies"):
        get_strategy("FedAvg").aggregate_fit(1, {"w": np.zeros(1)}, [])
    with pytest.raises(TaskError, match="summing to 0"):
        get_strategy("FedAvg").aggregate_fit(
            1, {"w": np.zeros(1)}, [reply(0, {"w": np.ones(1)}, 0)]
        )


# ---------------------------------------------------------------------- sampling


def test_by_default_every_participant_fits_and_evaluates_in_join_order() -> None:
    people = [participant(i) for i in range(5)]
    strategy = get_strategy("FedAvg", {})
    rng = np.random.default_rng(0)
    assert strategy.configure_fit(1, people, rng) == people
    assert strategy.configure_evaluate(1, people, rng) == people


def test_sampling_follows_fraction_and_minimum_and_is_seeded() -> None:
    people = [participant(i) for i in range(10)]
    strategy = get_strategy(
        "FedAvg", {"fraction_fit": 0.35, "fraction_eval": 0.1, "min_eval_clients": 2}
    )

    first = strategy.configure_fit(3, people, np.random.default_rng([23, 3]))
    again = strategy.configure_fit(3, people, np.random.default_rng([23, 3]))
    assert len(first) == 3  # floor(0.35 * 10)
    assert first == again
    assert [p.id for p in first] == sorted((p.id for p in first), key=lambda s: int(s[1:]))
    assert len(strategy.configure_evaluate(3, people, np.random.default_rng(1))) == 2  # the minimum


def test_too_few_participants_for_the_minimums_is_an_error() -> None:
    strategy = get_strategy("FedAvg", {"min_available_clients": 3})
    with pytest.raises(TaskError, match="min_available_clients=3 participants; only 2"):
        strategy.configure_fit(1, [participant(0), participant(1)], np.random.default_rng(0))
    strategy = get_strategy("FedAvg", {"min_fit_clients": 4})
    with pytest.raises(TaskError, match="min_fit_clients=4"):
        strategy.configure_fit(1, [participant(0)], np.random.default_rng(0))


# ------------------------------------------------------------------------ params


def test_defaults_differ_from_the_seed_on_fractions_only() -> None:
    params = get_strategy("FedAvg", {}).params
    assert params.model_dump() == {
        "fraction_fit": 1.0,
        "fraction_eval": 1.0,
        "min_fit_clients": 1,
        "min_eval_clients": 1,
        "min_available_clients": 1,
        "accept_failures": True,
        "initial_parameters": None,
    }


def test_fedavg_has_no_state_to_checkpoint() -> None:
    strategy = get_strategy("FedAvg", {})
    assert strategy.state_arrays() == {}
    strategy.load_state_arrays({})
    with pytest.raises(TaskError, match="keeps no state"):
        strategy.load_state_arrays({"momentum": np.zeros(1)})


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_strategy("FedMagic", {})
    message = str(info.value)
    assert "'FedMagic'" in message
    assert all(name in message for name in STRATEGIES)


@pytest.mark.parametrize(
    ("params", "field", "value"),
    [
        ({"fraction_fit": 1.5}, "fraction_fit", "1.5"),
        ({"fraction_eval": -0.1}, "fraction_eval", "-0.1"),
        ({"min_fit_clients": 0}, "min_fit_clients", "0"),
        ({"accept_failures": "sometimes"}, "accept_failures", '"sometimes"'),
        ({"server_momentum": 0.9}, "server_momentum", "0.9"),
    ],
)
def test_bad_params_name_the_field_and_the_value(
    params: dict[str, Any], field: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        get_strategy("FedAvg", params)
    message = str(info.value)
    assert f"{field}:" in message
    assert f"(got {value})" in message
