"""The exported estimators behave as scikit-learn estimators (metrics, pipelines, clone)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from fedsilo.errors import ConfigError, DataError
from fedsilo.packages.gbm import (
    FederatedHistGradientBoostingClassifier,
    FederatedHistGradientBoostingRegressor,
)

COLUMNS = ["a", "b", "c"]


def silos(task: str) -> list[pd.DataFrame]:
    rng = np.random.default_rng(5)
    frames = []
    for n in (400, 700):
        x = rng.normal(size=(n, 3))
        frame = pd.DataFrame(x, columns=COLUMNS)
        eta = x[:, 0] - np.abs(x[:, 1])
        frame["y"] = (
            (rng.random(n) < 1 / (1 + np.exp(-2 * eta))) if task == "classification" else eta
        )
        frame["y"] = frame["y"].astype(float)
        frames.append(frame)
    return frames


@pytest.fixture
def classifier(gbm_run: Any, gbm_cfg: Any) -> Any:
    fed = gbm_run(
        gbm_cfg("classification", max_depth=2, max_bins=32),
        {"predictors": COLUMNS, "target": "y"},
        silos("classification"),
        num_rounds=8,
    )
    return fed.model


def test_classifier_has_scikit_learns_api(classifier: Any) -> None:
    estimator = classifier.as_sklearn()
    frame = pd.concat(silos("classification"))
    x, y = frame[COLUMNS], frame["y"]
    assert isinstance(estimator, FederatedHistGradientBoostingClassifier) and is_classifier(
        estimator
    )
    proba = estimator.predict_proba(x)
    assert proba.shape == (len(x), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    decision = estimator.decision_function(x)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-decision)), rtol=1e-12)
    np.testing.assert_array_equal(estimator.predict(x), (decision > 0).astype(int))
    assert estimator.score(x, y) == pytest.approx(accuracy_score(y, estimator.predict(x)))
    assert roc_auc_score(y, proba[:, 1]) > 0.75
    # numpy input in predictor order, and the model's own predict(df)
    np.testing.assert_array_equal(estimator.predict(x.to_numpy()), classifier.predict(frame))
    np.testing.assert_allclose(classifier.predict_proba(frame), proba)
    params = estimator.get_params()
    assert params["max_depth"] == 2 and params["max_bins"] == 32 and params["learning_rate"] == 0.1
    assert estimator.n_iter_ == 8 and list(estimator.feature_names_in_) == COLUMNS


def test_fit_raises_and_clone_gives_an_unfitted_copy(classifier: Any) -> None:
    estimator = classifier.as_sklearn()
    with pytest.raises(ConfigError, match="federated model, trained already"):
        estimator.fit(np.zeros((2, 3)), [0, 1])
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    with pytest.raises(ConfigError, match="holds no trained forest"):
        copy.predict(np.zeros((1, 3)))


def test_works_as_the_last_step_of_a_pipeline(classifier: Any) -> None:
    frame = pd.concat(silos("classification"))
    renamed = frame.rename(columns={"a": "A"})
    pipeline = make_pipeline(
        FunctionTransformer(lambda df: df.rename(columns={"A": "a"})), classifier.as_sklearn()
    )
    np.testing.assert_array_equal(pipeline.predict(renamed), classifier.predict(frame))
    assert pipeline.score(renamed, frame["y"]) == pytest.approx(
        classifier.as_sklearn().score(frame, frame["y"])
    )


def test_bad_input_is_named(classifier: Any) -> None:
    estimator = classifier.as_sklearn()
    with pytest.raises(DataError, match="lacks predictor column"):
        estimator.predict(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(DataError, match=r"shape \(n_samples, 3\)"):
        estimator.predict(np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="not a torch module"):
        classifier.as_pytorch()


def test_regressor_scores_r2(gbm_run: Any, gbm_cfg: Any) -> None:
    frames = silos("regression")
    fed = gbm_run(
        gbm_cfg("regression", max_depth=3),
        {"predictors": COLUMNS, "target": "y"},
        frames,
        num_rounds=10,
    )
    estimator = fed.model.as_sklearn()
    assert isinstance(estimator, FederatedHistGradientBoostingRegressor) and is_regressor(estimator)
    frame = pd.concat(frames)
    assert estimator.score(frame[COLUMNS], frame["y"]) == pytest.approx(
        r2_score(frame["y"], estimator.predict(frame))
    )
    with pytest.raises(ConfigError, match="predict_proba needs"):
        fed.model.predict_proba(frame)
