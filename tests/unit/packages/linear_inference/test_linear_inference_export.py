"""The exported bundle: torch module, p-values, summaries, predictions, ChunkedTabularDataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from torch.utils.data import DataLoader

from fedsilo.errors import ConfigError, DataError
from fedsilo.federation import get_package
from fedsilo.packages.linear_inference.dataset import ChunkedTabularDataset

SHARED = ["s0", "s1"]
CHUNKED = ["c0", "c3", "c5"]
DATA = {"target": "y", "shared_predictors": SHARED, "chunked_predictors": CHUNKED}
LOGIT = {"strategy": {"name": "LogitRegInference", "params": {}}, "seed": 23}


@pytest.fixture
def fitted(silos: Any, run_federated: Any) -> Any:
    frames = silos("logistic")
    tests = silos("logistic", seed=1, sizes=(100, 100, 100))
    return run_federated(LOGIT, DATA, frames, tests=tests), pd.concat(frames, ignore_index=True)


def test_as_pytorch_gives_p_values_summaries_and_seed_style_predictions(
    fitted: Any, tmp_path: Path
) -> None:
    fit, pooled = fitted
    module = (
        get_package("linear_inference")
        .export(
            *get_package("linear_inference").parse_configs(LOGIT, DATA),
            {k: v for k, v in fit.ctx.saved[0].items()},
            fit.ctx.saved[1],
        )
        .as_pytorch()
    )
    assert isinstance(module, torch.nn.Module) and not module.training
    pvalues = module.p_values()
    assert list(pvalues.index) == CHUNKED and pvalues.dtype == np.float64
    table = module.summary("c3")
    assert list(table.columns) == ["coef", "std err", "z", "P>|z|", "[0.025", "0.975]"]
    assert list(table.index) == ["const", "s0", "s1", "c3"]
    assert table.loc["c3", "P>|z|"] == pvalues["c3"]

    path = tmp_path / "test.parquet"
    pooled.to_parquet(path)
    dataset = ChunkedTabularDataset(path=str(path), **DATA)
    assert len(dataset) == len(pooled)
    x, y = next(iter(DataLoader(dataset, batch_size=len(dataset), shuffle=False)))
    predictions = module(x)
    assert predictions.shape == (len(pooled), len(CHUNKED)) and predictions.dtype == torch.float64
    torch.testing.assert_close(module.predict(x[0], x[1]), predictions)
    torch.testing.assert_close(y, torch.tensor(pooled["y"].to_numpy()))
    for j, chunk in enumerate(CHUNKED):
        ref = sm.Logit(pooled["y"], sm.add_constant(pooled[[*SHARED, chunk]])).fit(disp=0)
        np.testing.assert_allclose(predictions[:, j].numpy(), ref.predict(), rtol=1e-6)
    np.testing.assert_allclose(fit.model.predict(pooled), predictions.numpy(), rtol=1e-12)


def test_round_metrics_follow_the_seed(fitted: Any) -> None:
    fit, _ = fitted
    rounds = fit.ctx.rounds
    first_federated, first_clients = rounds[1]
    # Round 1 evaluates every model at 0: a loss of log 2, as in the seed's output.
    assert first_federated["loss"] == pytest.approx(np.log(2.0), rel=1e-12)
    assert set(first_clients) == {"silo0", "silo1", "silo2"}
    assert set(first_clients["silo0"]) == {
        "test_loss",
        "test_accuracy",
        "test_roc_auc",
        "test_num_examples",
    }
    losses = [rounds[r][0]["loss"] for r in sorted(rounds)]
    assert losses[-1] < losses[0]
    assert fit.model.meta["federated_loss"] == pytest.approx(losses[-1])


def test_bad_inputs_are_named(fitted: Any, tmp_path: Path) -> None:
    fit, pooled = fitted
    with pytest.raises(KeyError, match="'c9' is not a chunked predictor"):
        fit.model.summary("c9")
    with pytest.raises(DataError, match="missing column"):
        fit.model.predict(pooled.drop(columns=["c5"]))
    path = tmp_path / "t.csv"
    pooled.drop(columns=["c5"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="'c5'"):
        ChunkedTabularDataset(str(path), "y", SHARED, CHUNKED)
    package = get_package("linear_inference")
    mc, dc = package.parse_configs(LOGIT, DATA)
    with pytest.raises(ConfigError, match=r"array 'beta' of shape \(3, 4\)"):
        package.export(mc, dc, {"beta": np.zeros((2, 4))}, {})
