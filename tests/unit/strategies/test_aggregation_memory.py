"""The running sum's memory: weighted_average narrows its float64 sums range by range and
gives each range back, with results bit-identical to the plain float64 path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.federation import Participant, Reply
from fedsilo.strategies.aggregation import (
    _mapping_of,
    cast_like,
    streamed_mean,
    weighted_average,
)
from fedsilo.wire import DatasetSummary

SUMMARY = DatasetSummary(train_rows=1, test_rows=0, columns=[])


def reply(i: int, arrays: dict[str, np.ndarray], num_examples: float) -> Reply:
    who = Participant(id=f"p{i}", client_name=f"client-{i}", dataset=SUMMARY)
    return Reply(participant=who, meta={"num_examples": num_examples}, arrays=arrays)


def test_large_sums_narrow_exactly_as_the_float64_path() -> None:
    rng = np.random.default_rng(3)
    shapes = {"w": (700, 450), "b": (300_001,), "count": (200_000,), "mask": (150_000,)}
    dtypes = {"w": np.float32, "b": np.float64, "count": np.int32, "mask": np.bool_}
    weights = [3.0, 11.0, 0.5]
    clients = [
        {
            "w": rng.standard_normal(shapes["w"]).astype(np.float32),
            "b": rng.standard_normal(shapes["b"]),
            "count": rng.integers(0, 50, shapes["count"]).astype(np.int32),
            "mask": rng.random(shapes["mask"]) < 0.3,
        }
        for _ in weights
    ]
    current = {name: np.zeros(shapes[name], dtype=dtypes[name]) for name in shapes}
    replies = [reply(i, a, w) for i, (a, w) in enumerate(zip(clients, weights, strict=True))]

    sums = streamed_mean(current, replies)
    assert all(_mapping_of(value) is not None for value in sums.values())  # the mapped path
    expected = cast_like(current, sums)  # the plain cast, sums left intact
    result = weighted_average(current, replies)

    for name in shapes:
        assert result[name].dtype == dtypes[name] and result[name].shape == shapes[name]
        np.testing.assert_array_equal(result[name], expected[name], err_msg=name)
    # and against numpy on the pooled arrays, as the FedAvg tests state it
    stacked = np.stack([c["b"] for c in clients])
    np.testing.assert_allclose(
        result["b"], np.average(stacked, axis=0, weights=weights), rtol=0, atol=1e-12
    )
    w64 = np.average(np.stack([c["w"].astype(np.float64) for c in clients]), 0, weights)
    np.testing.assert_array_equal(result["w"], w64.astype(np.float32))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_narrowing_costs_the_sums_not_the_sums_plus_the_result() -> None:
    clear_refs = Path("/proc/self/clear_refs")
    size = 4_000_000
    current = {"w": np.zeros(size, dtype=np.float32)}
    replies = [reply(i, {"w": np.full(size, float(i), dtype=np.float32)}, i + 1) for i in range(3)]
    try:
        clear_refs.write_text("5")  # resets the peak resident set (VmHWM) to the current one
    except OSError:
        pytest.skip("cannot reset the peak resident set here")
    base = _status_kib("VmRSS")
    result = weighted_average(current, iter(replies))
    peak = (_status_kib("VmHWM") - base) * 1024
    sums, narrowed = size * 8, size * 4
    assert peak < sums + narrowed / 2, (peak / sums, "sums")
    np.testing.assert_array_equal(result["w"], np.full(size, 8 / 6, dtype=np.float32))
