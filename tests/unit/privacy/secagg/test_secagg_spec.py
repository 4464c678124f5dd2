"""SecAggSpec: documented defaults, strict schema, the threshold rule."""

from __future__ import annotations

import pydantic
import pytest

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.privacy import secagg
from fedsilo.privacy.secagg import SecAggError, SecAggSpec, ShareError, ThresholdError


def test_defaults_and_schema() -> None:
    spec = SecAggSpec()
    assert (spec.enabled, spec.threshold, spec.clip_range) == (False, None, 8.0)
    assert (spec.quantization_bits, spec.modulus_bits) == (24, 56)
    for bad in (
        {"unknown": 1},
        {"quantization_bits": 41},
        {"quantization_bits": 7},
        {"clip_range": 0},
        {"threshold": 1},
        {"modulus_bits": 65},
    ):
        with pytest.raises(pydantic.ValidationError):
            SecAggSpec.model_validate(bad)


@pytest.mark.parametrize(("n", "t"), [(2, 2), (3, 2), (4, 3), (10, 7), (30, 20)])
def test_default_threshold_two_thirds(n: int, t: int) -> None:
    assert SecAggSpec().resolve_threshold(n) == t
    assert 2 * t > n


def test_explicit_threshold_must_be_a_majority_and_fit() -> None:
    assert SecAggSpec(threshold=6).resolve_threshold(10) == 6
    with pytest.raises(ConfigError, match="strict majority of the 10 participants"):
        SecAggSpec(threshold=5).resolve_threshold(10)
    with pytest.raises(ConfigError, match="must be <= the 3 participants"):
        SecAggSpec(threshold=4).resolve_threshold(3)
    with pytest.raises(ConfigError, match="at least 2 participants"):
        SecAggSpec().resolve_threshold(1)


def test_errors_and_public_face() -> None:
    assert issubclass(ThresholdError, SecAggError) and issubclass(ShareError, SecAggError)
    assert issubclass(SecAggError, FedsiloError)
    public = {
        name
        for name, value in vars(secagg).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith(secagg.__name__)
    }
    assert sorted(secagg.__all__) == sorted(public)
