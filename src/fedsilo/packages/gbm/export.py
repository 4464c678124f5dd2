"""A trained gbm as users hold it: predictions and scikit-learn estimators.

:meth:`GBMModel.as_sklearn` returns a :class:`FederatedHistGradientBoostingClassifier` or
:class:`FederatedHistGradientBoostingRegressor`: genuine scikit-learn estimators
(``BaseEstimator`` with ``ClassifierMixin`` / ``RegressorMixin``) whose ``get_params`` are the
session's hyperparameters and whose fitted state is the federated forest, so
``sklearn.metrics``, ``score``, ``clone`` and pipelines work; ``fit`` raises, since the model
was trained across silos and cannot be refitted on one machine's data.
"""

# ruff: noqa: N803  (X is scikit-learn's name for the feature matrix)
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from fedsilo.errors import ConfigError, DataError
from fedsilo.packages.gbm.config import GBMDataConfig, GBMModelConfig
from fedsilo.packages.gbm.predictor import Forest, expit
from fedsilo.wire import Arrays

if TYPE_CHECKING:
    import torch

__all__ = [
    "FederatedHistGradientBoostingClassifier",
    "FederatedHistGradientBoostingRegressor",
    "GBMModel",
]


class _FederatedForest(BaseEstimator):  # type: ignore[misc]
    """Hyperparameters as ``get_params`` reports them; the forest as fitted state."""

    def __init__(
        self,
        *,
        learning_rate: float = 0.1,
        max_depth: int | None = 4,
        max_leaf_nodes: int | None = None,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        max_bins: int = 255,
        sketch_relative_accuracy: float = 0.001,
        random_state: int = 23,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.sketch_relative_accuracy = sketch_relative_accuracy
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        raise ConfigError(
            f"Cannot fit {type(self).__name__}: it is a federated model, trained already "
            "across silos by a gbm session; start a new session to train another."
        )

    def _raw(self, X: Any) -> np.ndarray:
        forest: Forest | None = getattr(self, "forest_", None)
        if forest is None:
            raise ConfigError(
                f"This {type(self).__name__} holds no trained forest; get one from "
                "session.model().as_sklearn()."
            )
        names = list(self.feature_names_in_)
        if isinstance(X, pd.DataFrame):
            missing = [c for c in names if c not in X.columns]
            if missing:
                raise DataError([f"The data lacks predictor column(s) {', '.join(missing)}."])
            x = X[names].to_numpy(np.float64)
        else:
            x = np.asarray(X, dtype=np.float64)
            if x.ndim != 2 or x.shape[1] != len(names):
                raise DataError(
                    [
                        f"X must have shape (n_samples, {len(names)}) (predictors "
                        f"{', '.join(names)}). Got {x.shape}."
                    ]
                )
        if not np.isfinite(x).all():
            raise DataError(["X holds NaN or infinite values; gbm was trained without them."])
        return forest.raw(x)


class FederatedHistGradientBoostingClassifier(ClassifierMixin, _FederatedForest):  # type: ignore[misc]
    """A binary classifier boosted across silos (see the module docstring).

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    forest_ : Forest
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
    n_iter_ : int
        The number of trees.
    """

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of class 1, shape (n_samples,)."""
        return self._raw(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, 2)."""
        p = expit(self._raw(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted classes (0 or 1), shape (n_samples,)."""
        positive = self._raw(X) > 0  # checks the forest first, then classes_ exists
        labels: np.ndarray = self.classes_[positive.astype(np.int64)]
        return labels


class FederatedHistGradientBoostingRegressor(RegressorMixin, _FederatedForest):  # type: ignore[misc]
    """A regressor boosted across silos (attributes as the classifier's, no ``classes_``)."""

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values, shape (n_samples,)."""
        return self._raw(X)


class GBMModel:
    """A trained forest with its configs.

    Parameters
    ----------
    model_config : GBMModelConfig
    data_config : GBMDataConfig
    arrays : dict of str to ndarray
        A :class:`~fedsilo.packages.gbm.predictor.Forest` as arrays.
    meta : dict
        What the workflow saved (trees, metrics, selection).

    Raises
    ------
    ConfigError
        When the arrays are not a forest over the data_config's predictors.
    """

    def __init__(
        self,
        model_config: GBMModelConfig,
        data_config: GBMDataConfig,
        arrays: Arrays,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model_config = model_config
        self.data_config = data_config
        self.meta = dict(meta or {})
        self.forest = Forest.from_arrays(arrays, len(data_config.predictors))

    @property
    def task(self) -> str:
        return self.model_config.ml_task.type

    def as_sklearn(
        self,
    ) -> FederatedHistGradientBoostingClassifier | FederatedHistGradientBoostingRegressor:
        """The forest as a fitted scikit-learn estimator (see the module docstring)."""
        params = self.model_config.model.params.model_dump()
        estimator: FederatedHistGradientBoostingClassifier | FederatedHistGradientBoostingRegressor
        if self.task == "classification":
            estimator = FederatedHistGradientBoostingClassifier(**params)
            estimator.classes_ = np.array([0, 1])
        else:
            estimator = FederatedHistGradientBoostingRegressor(**params)
        estimator.forest_ = self.forest
        estimator.n_features_in_ = len(self.data_config.predictors)
        estimator.feature_names_in_ = np.asarray(self.data_config.predictors, dtype=object)
        estimator.n_iter_ = len(self.forest.trees)
        return estimator

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        """Classes (classification) or values (regression) of ``data``'s rows, (n_samples,)."""
        result: np.ndarray = self.as_sklearn().predict(data)
        return result

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        """Class probabilities, shape (n_samples, 2) (classification only)."""
        estimator = self.as_sklearn()
        if not isinstance(estimator, FederatedHistGradientBoostingClassifier):
            raise ConfigError(
                "predict_proba needs ml_task.type 'classification'; this is regression."
            )
        return estimator.predict_proba(data)

    def as_pytorch(self) -> torch.nn.Module:
        raise ConfigError(
            "A gbm model is a forest of trees, not a torch module; use as_sklearn() or predict()."
        )
