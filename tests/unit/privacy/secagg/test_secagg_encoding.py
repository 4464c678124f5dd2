"""Fixed-point encoding: the stated error bound ``W * c / (2 ** bits - 2)``, against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.privacy.secagg import SecAggError, SecAggSpec
from fedsilo.privacy.secagg.encoding import (
    FixedPoint,
    decode_mean,
    encode_update,
    flatten,
    pack,
    unflatten,
    unpack,
    update_length,
    value_bytes,
)


def _wrap_sum(vectors: list[np.ndarray], fixed: FixedPoint) -> np.ndarray:
    total = np.zeros_like(vectors[0])
    for vector in vectors:
        total += vector
    return total & fixed.mask


@pytest.mark.parametrize(("bits", "clip_range"), [(8, 1.0), (16, 8.0), (24, 8.0), (40, 1e3)])
def test_one_value_within_half_a_step(bits: int, clip_range: float) -> None:
    fixed = FixedPoint(bits, clip_range)
    values = np.random.default_rng(bits).uniform(-clip_range, clip_range, 10_000)
    decoded = fixed.decode_sum(fixed.encode(values))
    bound = clip_range / (2**bits - 2)
    assert fixed.error_bound(1) == pytest.approx(bound)
    assert np.max(np.abs(decoded - values)) <= bound * (1 + 1e-9)
    # The bound is tight: rounding uses most of the half step.
    assert np.max(np.abs(decoded - values)) > 0.9 * bound


@pytest.mark.parametrize("modulus_bits", [64, 56, 48, 32])
@pytest.mark.parametrize("n", [3, 10, 30])
def test_sum_of_n_within_n_half_steps(n: int, modulus_bits: int) -> None:
    fixed = FixedPoint(24, 8.0, modulus_bits)
    rng = np.random.default_rng(n)
    values = rng.uniform(-9.0, 9.0, size=(n, 5_000))  # some clipped
    total = _wrap_sum([fixed.encode(row) for row in values], fixed)
    expected = np.clip(values, -8.0, 8.0).sum(axis=0)
    error = np.abs(fixed.decode_sum(total, count=n) - expected)
    assert np.max(error) <= fixed.error_bound(n) * (1 + 1e-9)
    assert fixed.error_bound(n) == pytest.approx(n * 8.0 / (2**24 - 2))


def test_weighted_mean_within_one_half_step_whatever_the_weights() -> None:
    fixed = FixedPoint.from_spec(SecAggSpec())
    rng = np.random.default_rng(7)
    weights = [1, 17, 250_000, 3]
    arrays = [{"w": rng.normal(0, 2, (30, 20)), "b": rng.normal(0, 2, 20)} for _ in weights]
    total = _wrap_sum(
        [encode_update(fixed, a, w) for a, w in zip(arrays, weights, strict=True)], fixed
    )
    mean, total_weight = decode_mean(fixed, total, arrays[0])
    assert total_weight == sum(weights)
    for name in ("w", "b"):
        reference = np.average([a[name] for a in arrays], axis=0, weights=weights)
        assert np.max(np.abs(mean[name] - reference)) <= fixed.error_bound(1) * (1 + 1e-6)
        assert mean[name].shape == arrays[0][name].shape


def test_layout_is_sorted_names_then_weight() -> None:
    arrays = {"z": np.array([1.0, 2.0]), "a": np.array([[3.0]])}
    assert flatten(arrays).tolist() == [3.0, 1.0, 2.0]
    assert update_length(arrays) == 4
    back = unflatten(flatten(arrays), {"a": np.zeros((1, 1)), "z": np.zeros(2)})
    assert back["a"].shape == (1, 1) and back["z"].tolist() == [1.0, 2.0]
    fixed = FixedPoint(16, 4.0)
    vector = encode_update(fixed, arrays, 5)
    assert vector[-1] == 5
    with pytest.raises(SecAggError, match="must have 3 values"):
        unflatten(np.zeros(4), arrays)


def test_refuses_nan_bad_weight_and_overflow() -> None:
    fixed = FixedPoint(24, 8.0)
    with pytest.raises(ConfigError, match=r"finite values only\. Got 1 NaN"):
        fixed.encode(np.array([1.0, np.nan]))
    for weight in (-1, 2.5, True, fixed.max_weight + 1):
        with pytest.raises(ConfigError, match="weight must be"):
            fixed.encode(np.zeros(2), weight)  # type: ignore[arg-type]
    # max_weight: W * (2^(bits-1) - 1) must stay below 2^(k-1), k = 56 by default.
    assert fixed.max_weight * (2**23 - 1) < 2**55 <= (fixed.max_weight + 1) * (2**23 - 1)
    assert FixedPoint(24, 8.0, 64).max_weight * (2**23 - 1) < 2**63
    with pytest.raises(SecAggError, match="may have wrapped around the modulus"):
        fixed.decode_sum(np.zeros(2, dtype=np.uint64), count=fixed.max_weight + 1)
    with pytest.raises(SecAggError, match="total weight of 0"):
        decode_mean(fixed, np.zeros(3, dtype=np.uint64), {"a": np.zeros(2)})


@pytest.mark.parametrize("modulus_bits", [64, 56, 33])
def test_extreme_values_at_max_weight_do_not_wrap(modulus_bits: int) -> None:
    fixed = FixedPoint(24, 8.0, modulus_bits)
    half = fixed.max_weight // 2
    parts = [fixed.encode(np.array([8.0, -8.0]), half), fixed.encode(np.array([8.0, -8.0]), half)]
    decoded = fixed.decode_sum(_wrap_sum(parts, fixed), count=2 * half)
    np.testing.assert_allclose(decoded, [16.0 * half, -16.0 * half], rtol=1e-12)


def test_invalid_parameters() -> None:
    with pytest.raises(ConfigError, match="quantization_bits"):
        FixedPoint(41, 1.0)
    with pytest.raises(ConfigError, match="clip_range"):
        FixedPoint(24, float("inf"))
    with pytest.raises(ConfigError, match="modulus_bits"):
        FixedPoint(24, 1.0, 24)


@pytest.mark.parametrize(("modulus_bits", "width"), [(64, 8), (56, 7), (48, 6), (33, 5), (32, 4)])
def test_pack_keeps_ceil_k_over_8_bytes(modulus_bits: int, width: int) -> None:
    assert value_bytes(modulus_bits) == width
    rng = np.random.default_rng(modulus_bits)
    vector = rng.integers(0, 2**63, 1_001, dtype=np.uint64) & FixedPoint(24, 1.0, 64).mask
    vector &= np.uint64((1 << modulus_bits) - 1)
    packed = pack(vector, modulus_bits)
    assert packed.dtype == np.uint8 and packed.size == width * vector.size
    assert np.array_equal(unpack(packed, modulus_bits), vector)
    with pytest.raises(SecAggError, match=f"multiple of {width} bytes"):
        unpack(packed[:-1], modulus_bits)


def test_pack_refuses_values_beyond_the_modulus() -> None:
    with pytest.raises(SecAggError, match="does not fit in modulus_bits=40"):
        pack(np.array([1 << 40], dtype=np.uint64), 40)
    with pytest.raises(SecAggError, match="1-d uint64"):
        pack(np.zeros(3, dtype=np.int64), 40)  # type: ignore[arg-type]
