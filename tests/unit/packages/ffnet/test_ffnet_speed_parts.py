"""The parts that keep a small ffnet round cheap: the rank AUC (against scikit-learn) and
torch's thread count on a client."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedsilo.errors import ConfigError
from fedsilo.packages.ffnet.client import roc_auc
from fedsilo.training import limit_torch_threads
from fedsilo.training.threads import SMALL_MODEL_PARAMETERS, TORCH_THREADS_ENV


@pytest.mark.parametrize("decimals", [None, 1, 2])  # None: no ties; rounding makes ties
def test_the_binary_auc_equals_scikit_learns(decimals: int | None) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=500)
    p1 = 1 / (1 + np.exp(-(labels * 0.8 + rng.normal(size=500))))
    if decimals is not None:
        p1 = np.round(p1, decimals)
    probabilities = np.column_stack([1 - p1, p1])
    expected = roc_auc_score(labels, p1)
    assert roc_auc(labels, probabilities) == pytest.approx(expected, abs=1e-12)


def test_the_multiclass_auc_equals_scikit_learns_one_vs_rest_macro() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=400)
    logits = rng.normal(size=(400, 3)) + np.eye(3)[labels]
    probabilities = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    expected = roc_auc_score(labels, probabilities, multi_class="ovr")
    assert roc_auc(labels, probabilities) == pytest.approx(expected, abs=1e-12)


def test_the_auc_is_nan_with_one_class_and_averages_present_classes() -> None:
    probabilities = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    assert np.isnan(roc_auc(np.array([1, 1, 1]), probabilities))
    labels = np.array([0, 0, 2])  # class 1 absent: the mean over classes 0 and 2
    expected = np.mean([roc_auc_score(labels == c, probabilities[:, c]) for c in (0, 2)])
    assert roc_auc(labels, probabilities) == pytest.approx(expected, abs=1e-12)


@pytest.fixture
def torch_threads(monkeypatch: pytest.MonkeyPatch) -> object:
    before = torch.get_num_threads()
    monkeypatch.delenv(TORCH_THREADS_ENV, raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


def test_a_small_model_trains_on_one_thread_a_large_one_keeps_torchs_default(
    torch_threads: pytest.MonkeyPatch,
) -> None:
    torch.set_num_threads(2)
    assert limit_torch_threads(SMALL_MODEL_PARAMETERS) is None
    assert torch.get_num_threads() == 2
    assert limit_torch_threads(500) == 1
    assert torch.get_num_threads() == 1


def test_the_environment_sets_the_thread_count(torch_threads: pytest.MonkeyPatch) -> None:
    torch_threads.setenv(TORCH_THREADS_ENV, "2")
    assert limit_torch_threads(500) == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_names_the_variable(
    torch_threads: pytest.MonkeyPatch, value: str
) -> None:
    torch_threads.setenv(TORCH_THREADS_ENV, value)
    with pytest.raises(ConfigError, match=f"{TORCH_THREADS_ENV} must be an integer >= 1.*{value}"):
        limit_torch_threads(500)
