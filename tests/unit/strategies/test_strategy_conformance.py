"""One conformance suite run over every registered strategy (scikit-learn's common tests).

A strategy added to ``fedsilo.strategies.STRATEGIES`` is picked up here automatically; it
must be classed as averaging or adaptive below and give a bad value for each new parameter,
so nothing new escapes the suite.
"""

from __future__ import annotations

import json
import tracemalloc
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import Participant, Reply
from fedsilo.strategies import STRATEGIES, Strategy, StrategyParams, get_strategy, strategy_names
from fedsilo.wire import Arrays, DatasetSummary, decode_frame, encode_frame

SUMMARY = DatasetSummary(train_rows=1, test_rows=0, columns=[])

#: params a strategy cannot be built without
REQUIRED: dict[str, dict[str, Any]] = {
    "FedProx": {"proximal_mu": 0.1},
    # far above any update here, so it clips nothing (clipping: test_robust.py)
    "FedClippedAvg": {"clip_norm": 1e6},
}
#: with default params the new model is a mean (or median) of the client models
AVERAGING = {
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "iter_avg",
    "FedMedian",
    "FedTrimmedAvg",
    "FedClippedAvg",
}
#: order statistics hold the round's replies (every value of a coordinate at once)
HOLDING = {"FedMedian", "FedTrimmedAvg"}
#: the new model is an optimizer step driven by the mean (Reddi et al.)
ADAPTIVE = {"FedOpt", "FedAdam", "FedAdagrad", "FedYogi"}
#: every client counts once, whatever its num_examples
UNWEIGHTED = {"iter_avg", "FedMedian", "FedTrimmedAvg"}
#: configurations whose state is exercised (FedAvgM keeps momentum only when it has some)
STATEFUL_CASES: list[tuple[str, dict[str, Any]]] = [
    ("FedAvgM", {"server_momentum": 0.9}),
    ("FedAvgM", {"server_momentum": 0.5, "nesterov": True, "server_learning_rate": 0.7}),
    ("FedOpt", {"beta_1": 0.5, "beta_2": 0.9}),  # its defaults (0, 0) keep no memory
    *[(name, {}) for name in sorted(ADAPTIVE - {"FedOpt"})],
]
#: a bad value for every parameter any strategy takes, and how the message shows it
BAD_VALUES: dict[str, tuple[Any, str]] = {
    "fraction_fit": (1.5, "1.5"),
    "fraction_eval": (-0.1, "-0.1"),
    "min_fit_clients": (0, "0"),
    "min_eval_clients": (0, "0"),
    "min_available_clients": (-2, "-2"),
    "accept_failures": ("sometimes", '"sometimes"'),
    "initial_parameters": ([1.0, 2.0], "[1.0, 2.0]"),
    "server_learning_rate": (0.0, "0.0"),
    "server_momentum": (1.0, "1.0"),
    "nesterov": ("maybe", '"maybe"'),
    "eta": (-0.5, "-0.5"),
    "beta_1": (1.0, "1.0"),
    "beta_2": (1.2, "1.2"),
    "tau": (0.0, "0.0"),
    "proximal_mu": (-1.0, "-1.0"),
    "clip_norm": (0.0, "0.0"),
    "beta": (0.5, "0.5"),
}

each_strategy = pytest.mark.parametrize("name", strategy_names())
each_stateful = pytest.mark.parametrize(("name", "params"), STATEFUL_CASES)


def build(name: str, **params: Any) -> Strategy:
    return get_strategy(name, REQUIRED.get(name, {}) | params)


def participant(i: int) -> Participant:
    return Participant(id=f"p{i}", client_name=f"client-{i}", dataset=SUMMARY)


def reply(i: int, arrays: Arrays, num_examples: Any = 10) -> Reply:
    return Reply(participant=participant(i), meta={"num_examples": num_examples}, arrays=arrays)


def model(seed: int, dtype: Any = np.float64) -> Arrays:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((3, 2)).astype(dtype),
        "b": rng.standard_normal(2).astype(dtype),
        "scale": np.asarray(rng.standard_normal(), dtype=dtype),
    }


def round_replies(server_round: int, current: Arrays, n_clients: int = 3) -> list[Reply]:
    """Fixed, different client models (like ``current``) and weights for round ``server_round``."""
    replies = []
    for i in range(n_clients):
        arrays = model(100 * server_round + i)
        arrays = {key: arrays[key].astype(current[key].dtype) for key in current}
        replies.append(reply(i, arrays, num_examples=5 * i + 3))
    return replies


def run_rounds(strategy: Strategy, current: Arrays, rounds: range) -> Arrays:
    for server_round in rounds:
        current = strategy.aggregate_fit(
            server_round, current, round_replies(server_round, current)
        )
    return current


def assert_same(a: Arrays, b: Arrays, atol: float = 0.0) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


def test_every_strategy_is_classified_and_has_a_bad_value_for_each_param() -> None:
    assert set(STRATEGIES) == AVERAGING | ADAPTIVE
    for cls in STRATEGIES.values():
        assert set(cls.params_type.model_fields) <= set(BAD_VALUES), cls.name


# ------------------------------------------------------------------ construction


@each_strategy
def test_registered_under_its_name_with_the_shared_params_and_defaults(name: str) -> None:
    strategy = build(name)
    assert type(strategy) is STRATEGIES[name] and strategy.name == name
    assert issubclass(strategy.params_type, StrategyParams)
    shared = StrategyParams().model_dump()
    assert {key: strategy.params.model_dump()[key] for key in shared} == shared
    json.dumps(strategy.params.model_dump())  # params travel in JSON configs
    assert strategy.state_arrays() == {}  # nothing before the first round


@each_strategy
def test_every_param_refuses_a_bad_value_naming_field_and_value(name: str) -> None:
    for field in STRATEGIES[name].params_type.model_fields:
        value, shown = BAD_VALUES[field]
        with pytest.raises(ConfigError) as info:
            build(name, **{field: value})
        message = str(info.value)
        assert message.startswith(f"strategy {name!r} params are invalid: "), message
        assert f"{field}:" in message and f"(got {shown})" in message, message


@each_strategy
def test_unknown_params_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"server_mommentum: Extra inputs are not permitted"):
        build(name, server_mommentum=0.9)


@each_strategy
def test_fit_and_evaluate_configs_are_json_dicts(name: str) -> None:
    strategy = build(name)
    for server_round in (1, 7):
        fit = strategy.fit_config(server_round)
        assert json.loads(json.dumps(fit)) == fit
        assert json.loads(json.dumps(strategy.evaluate_config(server_round))) == {}
    expected = {"proximal_mu": 0.1} if name == "FedProx" else {}
    assert strategy.fit_config(1) == expected


# ---------------------------------------------------------------------- sampling


@each_strategy
def test_sampling_honours_fraction_and_minimum_and_is_seeded(name: str) -> None:
    people = [participant(i) for i in range(10)]
    strategy = build(name, fraction_fit=0.35, fraction_eval=0.1, min_eval_clients=2)
    first = strategy.configure_fit(3, people, np.random.default_rng([23, 3]))
    again = strategy.configure_fit(3, people, np.random.default_rng([23, 3]))
    assert len(first) == 3 and first == again  # floor(0.35 * 10), same rng -> same clients
    assert first == sorted(first, key=people.index)  # join order kept
    draws = {
        tuple(p.id for p in strategy.configure_fit(3, people, np.random.default_rng(seed)))
        for seed in range(20)
    }
    assert len(draws) > 1  # the rng does choose
    assert len(strategy.configure_evaluate(3, people, np.random.default_rng(1))) == 2
    assert build(name).configure_fit(1, people, np.random.default_rng(0)) == people
    with pytest.raises(TaskError, match="min_available_clients=11 participants; only 10"):
        build(name, min_available_clients=11).configure_fit(1, people, np.random.default_rng(0))


# ------------------------------------------------------------------- aggregation


@each_strategy
def test_result_keeps_names_shapes_and_dtypes(name: str) -> None:
    current = {
        "w32": np.zeros((2, 3), dtype=np.float32),
        "w64": np.zeros(4),
        "count": np.zeros(2, dtype=np.int64),
    }
    replies = [
        reply(
            0, {"w32": np.ones((2, 3), np.float32), "w64": np.ones(4), "count": np.array([1, 10])}
        ),
        reply(
            1, {"w32": np.ones((2, 3), np.float32), "w64": np.ones(4), "count": np.array([2, 20])}
        ),
    ]
    result = build(name).aggregate_fit(1, current, replies)
    assert {k: (v.shape, v.dtype) for k, v in result.items()} == {
        k: (v.shape, v.dtype) for k, v in current.items()
    }
    # Counters are never stepped by an optimizer: the rounded (equal-weight) mean.
    np.testing.assert_array_equal(result["count"], [2, 15])


@each_strategy
def test_clients_that_return_the_global_model_leave_it_unchanged(name: str) -> None:
    current = model(1)
    replies = [reply(i, {k: v.copy() for k, v in current.items()}, 3 + i) for i in range(3)]
    # Not bit for bit: the weighted mean of equal values is off by an ulp, and an adaptive
    # step divides that by about tau (1e-3).
    assert_same(build(name).aggregate_fit(1, current, replies), current, atol=1e-12)


@each_strategy
def test_identical_client_models_are_returned_by_averaging_strategies(name: str) -> None:
    if name not in AVERAGING:
        pytest.skip("an adaptive step moves toward the clients' model, not onto it")
    target = model(2)
    replies = [reply(i, {k: v.copy() for k, v in target.items()}, 1 + 4 * i) for i in range(4)]
    assert_same(build(name).aggregate_fit(1, model(1), replies), target, atol=1e-15)


@each_strategy
def test_weights_are_respected(name: str) -> None:
    current, a, b = model(0), model(1), model(2)
    weighted = build(name).aggregate_fit(1, current, [reply(0, a, 1), reply(1, b, 3)])
    if name in UNWEIGHTED:
        equal = build(name).aggregate_fit(1, current, [reply(0, a, 1000), reply(1, b, 0)])
        assert_same(weighted, equal)  # num_examples plays no part
        duplicated = build(name).aggregate_fit(
            1, current, [reply(0, a), reply(1, b), reply(2, b), reply(3, b)]
        )
        assert not np.allclose(weighted["w"], duplicated["w"])
        return
    # Weight 3 counts as three copies of the same model; scaling every weight changes nothing.
    duplicated = build(name).aggregate_fit(
        1, current, [reply(0, a, 1), reply(1, b, 1), reply(2, b, 1), reply(3, b, 1)]
    )
    scaled = build(name).aggregate_fit(1, current, [reply(0, a, 7), reply(1, b, 21)])
    assert_same(weighted, duplicated, atol=1e-12)
    assert_same(weighted, scaled, atol=1e-12)
    # A client with no examples counts for nothing.
    alone = build(name).aggregate_fit(1, current, [reply(0, a, 5)])
    with_empty = build(name).aggregate_fit(1, current, [reply(0, a, 5), reply(1, b, 0)])
    assert_same(alone, with_empty)


@each_strategy
def test_replies_are_streamed_and_never_kept(name: str) -> None:
    if name in HOLDING:
        pytest.skip("an order statistic needs every reply of the round at once")
    n_clients, size = 24, 100_000  # 0.8 MB per float64 array
    alive: list[weakref.ref[np.ndarray]] = []

    def replies() -> Iterator[Reply]:
        for i in range(n_clients):
            # Every reply handed over before must already be gone (arrays are freed by
            # reference counting, no collection needed).
            assert all(ref() is None for ref in alive), f"a reply was kept (client {i})"
            item = reply(i, {"w": np.full(size, float(i))}, i + 1)
            alive.append(weakref.ref(item.arrays["w"]))
            yield item
            del item  # this generator must not be what keeps it

    strategy = build(name)
    current = {"w": np.zeros(size)}
    tracemalloc.start()
    try:
        result = strategy.aggregate_fit(1, current, replies())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # mean, moments, temporaries and the result: a handful of copies, not one per client
    assert peak < 12 * size * 8, peak / (size * 8)
    assert result["w"].shape == (size,)


@each_strategy
def test_malformed_replies_are_refused_naming_the_client(name: str) -> None:
    current = {"w": np.zeros(2)}
    cases: list[tuple[Reply, str]] = [
        (reply(4, {"w": np.ones(3)}), "array 'w' of shape (3,); expected (2,)"),
        (reply(4, {"v": np.ones(2)}), "missing arrays ['w'], unexpected arrays ['v']"),
    ]
    if name not in UNWEIGHTED:
        cases.append((reply(4, {"w": np.ones(2)}, None), "meta['num_examples'] as a number"))
        cases.append((reply(4, {"w": np.ones(2)}, -3), "meta['num_examples'] >= 0. Got -3"))
    for bad, message in cases:
        with pytest.raises(TaskError) as info:
            build(name).aggregate_fit(1, current, [reply(0, {"w": np.ones(2)}), bad])
        assert "client-4" in str(info.value) and message in str(info.value)
    with pytest.raises(TaskError, match="no replies"):
        build(name).aggregate_fit(1, current, [])


@each_strategy
def test_a_failed_aggregation_leaves_the_state_untouched(name: str) -> None:
    params = dict(STATEFUL_CASES).get(name, {})
    failed, clean = build(name, **params), build(name, **params)
    current = run_rounds(failed, model(0), range(1, 2))
    assert_same(current, run_rounds(clean, model(0), range(1, 2)))
    with pytest.raises(TaskError):
        failed.aggregate_fit(2, current, [*round_replies(2, current), reply(9, {"w": np.ones(1)})])
    assert_same(run_rounds(failed, current, range(2, 4)), run_rounds(clean, current, range(2, 4)))


# ------------------------------------------------------------------------- state


@each_stateful
def test_state_round_trips_and_a_restored_strategy_continues_bit_for_bit(
    name: str, params: dict[str, Any]
) -> None:
    for dtype in (np.float64, np.float32):
        running = build(name, **params)
        start = model(0, dtype)
        # 0-d arrays are left out: encode_frame returns them with shape (1,) (reported).
        del start["scale"]
        current = run_rounds(running, start, range(1, 3))
        state = running.state_arrays()
        expected_keys = {f"{slot}/{key}" for slot in running.state_slots for key in current}
        assert set(state) == expected_keys
        assert all(array.dtype == np.float64 for array in state.values())

        # Through the wire codec, as the checkpoint stores it.
        restored_arrays, _ = decode_frame(encode_frame(state))
        restored = build(name, **params)
        restored.load_state_arrays(restored_arrays)
        assert_same(restored.state_arrays(), state)

        final = run_rounds(running, current, range(3, 5))
        resumed = run_rounds(restored, current, range(3, 5))
        assert_same(final, resumed)  # atol 0: bit for bit
        assert_same(running.state_arrays(), restored.state_arrays())

        # A strategy that forgot its state does not continue the same way.
        forgetful = run_rounds(build(name, **params), current, range(3, 5))
        assert not np.array_equal(final["w"], forgetful["w"])


@each_stateful
def test_foreign_or_mismatched_state_is_refused(name: str, params: dict[str, Any]) -> None:
    strategy = build(name, **params)
    with pytest.raises(TaskError, match="the checkpoint holds 'momentumx/w'"):
        strategy.load_state_arrays({"momentumx/w": np.zeros(1)})
    state = {f"{slot}/w": np.zeros(7) for slot in strategy.state_slots}
    strategy.load_state_arrays(state)
    with pytest.raises(TaskError, match="state does not match the global model"):
        strategy.aggregate_fit(1, model(0), round_replies(1, model(0)))
    if len(strategy.state_slots) > 1:
        with pytest.raises(TaskError, match="state is incomplete"):
            build(name, **params).load_state_arrays({f"{strategy.state_slots[0]}/w": np.zeros(1)})


@each_strategy
def test_stateless_strategies_refuse_state(name: str) -> None:
    strategy = build(name)
    if strategy.state_slots:
        pytest.skip("keeps state")
    strategy.load_state_arrays({})
    with pytest.raises(TaskError, match="keeps no state"):
        strategy.load_state_arrays({"momentum/w": np.zeros(1)})
    run_rounds(strategy, model(0), range(1, 3))
    assert strategy.state_arrays() == {}


# ------------------------------------------------------------- initial parameters


@each_strategy
def test_initial_parameters_give_the_first_global_model(name: str) -> None:
    template = {"w": np.zeros((2, 2), dtype=np.float32), "n": np.zeros(1, dtype=np.int64)}
    assert build(name).initial_arrays(template) is template
    given = {"w": [[1.5, 2.0], [3.0, -4.25]], "n": [3]}
    result = build(name, initial_parameters=given).initial_arrays(template)
    np.testing.assert_array_equal(result["w"], np.array(given["w"], dtype=np.float32))
    assert result["w"].dtype == np.float32 and result["n"].dtype == np.int64

    wrong = {"w": [1.0, 2.0], "extra": 1.0}
    with pytest.raises(ConfigError) as info:
        build(name, initial_parameters=wrong).initial_arrays(template)
    message = str(info.value)
    assert message.startswith("strategy.params.initial_parameters does not match")
    assert "'n' is missing" in message
    assert "'extra' is not part of the model" in message
    assert "'w' has shape (2,), expected (2, 2)" in message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1.0, 2.0], [3.0]], "initial_parameters.w: expected a number or a rectangular"),
        ("0.5", "initial_parameters.w: expected a number or a rectangular"),
        ([True, False], "initial_parameters.w: expected a number or a rectangular"),
        ([1.0, float("nan")], "initial_parameters.w: values must be finite"),
    ],
)
def test_initial_parameters_must_be_numeric_arrays(value: Any, message: str) -> None:
    for name in strategy_names():
        with pytest.raises(ConfigError, match=message):
            build(name, initial_parameters={"w": value})


# ------------------------------------------------------------------ per-round hooks


@each_strategy
def test_per_round_hooks_add_to_the_task_meta(name: str) -> None:
    strategy = get_strategy(
        name,
        REQUIRED.get(name, {}),
        on_fit_config_fn=lambda server_round: {"epochs": server_round},
        on_evaluate_config_fn=lambda server_round: {"batch": 2 * server_round},
    )
    built_in = build(name).fit_config(3)
    assert strategy.fit_config(3) == {"epochs": 3, **built_in}
    assert strategy.evaluate_config(3) == {"batch": 6}
    with pytest.raises(TypeError, match="on_fit_config_fn must return a dict"):
        get_strategy(name, REQUIRED.get(name, {}), on_fit_config_fn=lambda _: 3).fit_config(1)  # type: ignore[arg-type,return-value]


@each_strategy
def test_aggregate_evaluate_pools_the_clients_exactly_and_evaluate_calls_evaluate_fn(
    name: str,
) -> None:
    replies = [
        Reply(participant(i), {"test_loss": loss, "test_num_examples": n}, {})
        for i, (loss, n) in enumerate([(1.0, 10), (3.0, 30), (float("nan"), 5)])
    ]
    assert build(name).aggregate_evaluate(1, iter(replies)) == {"loss": 2.5}
    assert build(name).evaluate(1, model(0)) is None
    seen: list[Any] = []

    def evaluate_fn(server_round: int, arrays: Arrays, config: dict[str, Any]) -> Any:
        seen.append((server_round, sorted(arrays), config))
        return 0.25, {"accuracy": 1}

    strategy = get_strategy(
        name,
        REQUIRED.get(name, {}),
        evaluate_fn=evaluate_fn,
        on_evaluate_config_fn=lambda server_round: {"round_seen": server_round},
    )
    assert strategy.evaluate(4, model(0)) == (0.25, {"accuracy": 1.0})
    assert seen == [(4, sorted(model(0)), {"round_seen": 4})]
