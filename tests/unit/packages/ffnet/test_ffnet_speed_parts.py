"""The parts that keep a small ffnet round cheap: the rank AUC (against scikit-learn),
torch's thread count on a client, and a fit that evaluates first (one exchange a round)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError
from fedsilo.packages.ffnet.client import FFNetExecutor, roc_auc
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig
from fedsilo.packages.ffnet.model import build_module, module_arrays
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


def test_a_fit_asked_to_evaluate_first_reports_the_evaluate_tasks_metrics() -> None:
    # The round loop's fit_evaluates: the previous round's evaluation rides on this fit.
    mc = FFNetModelConfig.model_validate(
        {
            "model": {"params": {"input_size": 2, "hidden_layer_sizes": [4], "output_size": 2}},
            "ml_task": {"type": "classification"},
            "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
            "seed": 3,
        }
    )
    dc = FFNetDataConfig(predictors=["a", "b"], target="y")
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.standard_normal((60, 2)), columns=["a", "b"])
    frame["y"] = (frame["a"] > 0).astype(np.int64)
    dataset = LocalDataset(train=frame.iloc[:40], test=frame.iloc[40:], batch_size=16)
    weights = module_arrays(build_module(mc))
    alone = FFNetExecutor(mc, dc, dataset)
    together = FFNetExecutor(mc, dc, dataset)
    expected = alone.handle("evaluate", {"round": 1}, weights)[0]
    fitted = alone.handle("fit", {"round": 2}, weights)
    meta, arrays = together.handle("fit", {"round": 2, "evaluate": {"round": 1}}, weights)
    assert meta.pop("evaluation") == expected
    assert meta == fitted[0]
    for name, value in fitted[1].items():
        np.testing.assert_array_equal(arrays[name], value)
