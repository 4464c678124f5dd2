"""OpenDP mechanisms: what they spend, and errors within their stated accuracy.

OpenDP draws noise from the OS's cryptographic generator and cannot be seeded, so the
accuracy checks use bounds that fail with probability ``ALPHA`` per released number; with
the few hundred numbers checked here the suite fails spuriously about once in a million runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsilo.analytics.privacy import (
    Release,
    _opendp,
    _smallest_threshold,
    noisy_count,
    noisy_counts,
    noisy_sum,
    noisy_threshold_counts,
)

ALPHA = 1e-9


def test_noisy_counts_spend_their_share_and_stay_within_accuracy() -> None:
    counts = np.array([0, 3, 1000, 52_000, 7])
    noisy, release = noisy_counts(counts, 0.25, "x", "histogram")
    assert release.mechanism == "discrete_laplace"
    assert release.epsilon <= 0.25 and release.epsilon == pytest.approx(0.25, rel=1e-9)
    assert noisy.dtype == np.int64 and (noisy >= 0).all()
    assert np.all(np.abs(noisy - counts) <= release.accuracy(ALPHA))
    assert release.scale == pytest.approx(4.0, rel=1e-9)  # sensitivity 1 / epsilon


def test_noisy_count_and_sum_within_accuracy() -> None:
    value, release = noisy_count(12, 0.5, "x", "distinct")
    assert abs(value - 12) <= release.accuracy(ALPHA)
    assert release.epsilon == pytest.approx(0.5, rel=1e-9)

    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 2.0, 10_000)
    bounds = (-3.0, 3.0)
    total, release = noisy_sum(values, bounds, 0.3, "x", "sum")
    assert release.mechanism == "laplace" and release.epsilon <= 0.3
    assert release.epsilon == pytest.approx(0.3, rel=1e-9)
    # OpenDP states the sensitivity of a float sum on [-3, 3] as the width (plus float slack).
    assert release.scale == pytest.approx(6.0 / 0.3, rel=1e-6)
    assert abs(total - np.clip(values, *bounds).sum()) <= release.accuracy(ALPHA)


def test_threshold_release_never_shows_a_small_key() -> None:
    counts = {f'"c{i}"': c for i, c in enumerate([1, 2, 4, 40, 900, 5000, 20_000])}
    released, release = noisy_threshold_counts(counts, 0.5, 1e-7, 0, "x", "value_counts")
    assert release.mechanism == "laplace_threshold" and release.threshold is not None
    assert release.epsilon == pytest.approx(0.5, rel=1e-9) and release.delta <= 1e-7
    accuracy = release.accuracy(ALPHA)
    for key, noisy in released.items():
        assert noisy >= release.threshold
        assert abs(noisy - counts[key]) <= accuracy
    for key, count in counts.items():
        if count >= release.threshold + accuracy:
            assert key in released
        if count < release.threshold - accuracy:
            assert key not in released
    assert '"c0"' not in released and '"c6"' in released


def test_the_policy_floor_raises_the_threshold() -> None:
    _, loose = noisy_threshold_counts({1: 50}, 2.0, 1e-3, 0, "x", "sketch")
    _, floored = noisy_threshold_counts({1: 50}, 2.0, 1e-3, 500, "x", "sketch")
    assert loose.threshold is not None and loose.threshold < 500
    assert floored.threshold == 500


def test_smallest_threshold_is_exact() -> None:
    for limit in (1, 2, 17, 386, 10_000, 123_456):
        found = _smallest_threshold(lambda t, limit=limit: t >= limit, 25.0, 1e-7)  # type: ignore[misc]
        assert found == limit
    # against OpenDP's privacy map: delta fits at the threshold and not one below it
    released, release = noisy_threshold_counts({}, 0.04, 1e-7, 0, "x", "sketch")
    assert released == {} and release.threshold is not None
    dp = _opendp()  # OpenDP's modules, without the prelude's slow scikit-learn import
    domain = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
    metric = dp.l01inf_distance(dp.absolute_distance(T=dp.i64))

    def delta(threshold: int) -> float:
        made = dp.m.make_laplace_threshold(domain, metric, scale=release.scale, threshold=threshold)
        return float(made.map((1, 1, 1))[1])

    assert delta(release.threshold) <= 1e-7 < delta(release.threshold - 1)


def test_release_json_round_trip() -> None:
    release = Release("x", "sum", "laplace", 0.1, 0.0, 20.0)
    data = release.to_json()
    assert data["accuracy_95"] == pytest.approx(20.0 * math.log(1 / 0.05), rel=1e-6)
    assert Release.from_json(data) == release


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match=r"finite epsilon > 0. Got 0"):
        noisy_count(1, 0.0, "x", "distinct")
    with pytest.raises(ValueError, match=r"needs delta > 0. Got 0"):
        noisy_threshold_counts({1: 1}, 1.0, 0.0, 0, "x", "sketch")
