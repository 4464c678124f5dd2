"""Build a fitted scikit-learn estimator from federated GLM coefficients.

scikit-learn has no constructor for a fitted model, so the estimator is created with the
hyperparameters that give the same objective and its fitted attributes are set as ``fit``
would set them. Its GLM regressors also keep their loss object (``_base_loss``, which holds
the inverse link) from ``fit``; it is rebuilt with the estimator's own ``_get_loss`` -- the
one private hook used, covered by the package's tests against the installed scikit-learn.

The penalty conventions (with ``W`` the sum of the sample weights over all silos):

* fedsilo, ``GammaRegressor`` & co., ``ElasticNet``, ``Lasso``: ``1/(2W) sum s_i d_i +
  alpha * (l1_ratio |w|_1 + (1 - l1_ratio)/2 |w|^2)``;
* ``Ridge``: ``sum s_i (y_i - mu_i)^2 + alpha_ridge |w|^2``, so ``alpha_ridge = alpha W``;
* ``LogisticRegression``: ``C sum s_i logloss_i + l1_ratio |w|_1 + (1 - l1_ratio)/2 |w|^2``,
  and ``d_i = 2 logloss_i``, so ``C = 1 / (alpha W)`` (``inf`` unpenalized).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsilo.errors import ConfigError

if TYPE_CHECKING:
    from fedsilo.packages.glm.export import GLMModel

__all__ = ["build_estimator"]


def build_estimator(model: GLMModel) -> Any:
    """The fitted scikit-learn estimator of ``model`` (see :meth:`GLMModel.as_sklearn`).

    Raises
    ------
    ConfigError
        When the model's weight sum is unknown but needed for the penalty conversion, or
        the model has a tanh output (no scikit-learn estimator has one).
    """
    from sklearn import linear_model as lm

    family = model.family
    if family.activation == "tanh":
        raise ConfigError(
            "No scikit-learn estimator has a tanh output; use predict() or as_pytorch() "
            "for this model."
        )
    params = model.model_config.ml_task.params
    alpha, l1_ratio = params.alpha, params.l1_ratio
    estimator: Any
    if family.task == "logistic":
        if alpha > 0:
            c = 1.0 / (alpha * _weight_sum(model))
            solver = "lbfgs" if l1_ratio == 0 else "saga"
            estimator = lm.LogisticRegression(C=c, l1_ratio=l1_ratio, solver=solver)
        else:
            estimator = lm.LogisticRegression(C=math.inf, l1_ratio=0.0)
        estimator.classes_ = np.array([0, 1])
        estimator.coef_ = model.beta[1:].reshape(1, -1).copy()
        estimator.intercept_ = model.beta[:1].copy()
        estimator.n_iter_ = np.array([int(model.meta.get("rounds", 0))], dtype=np.int32)
    elif family.task == "normal" and family.activation == "identity":
        if alpha == 0:
            estimator = lm.LinearRegression()
        elif l1_ratio == 0:
            estimator = lm.Ridge(alpha=alpha * _weight_sum(model))
        elif l1_ratio == 1:
            estimator = lm.Lasso(alpha=alpha)
        else:
            estimator = lm.ElasticNet(alpha=alpha, l1_ratio=l1_ratio)
        _set_linear(estimator, model)
    else:
        l2 = alpha * (1.0 - l1_ratio)
        assert family.power is not None
        if family.task == "poisson":
            estimator = lm.PoissonRegressor(alpha=l2)
        elif family.task == "gamma":
            estimator = lm.GammaRegressor(alpha=l2)
        else:  # normal-log, inverseGaussian, tweedie
            estimator = lm.TweedieRegressor(power=family.power, link="log", alpha=l2)
        _set_linear(estimator, model)
        estimator.n_iter_ = int(model.meta.get("rounds", 0))
        estimator._base_loss = estimator._get_loss()
    estimator.n_features_in_ = len(model.predictors)
    estimator.feature_names_in_ = np.asarray(model.predictors, dtype=object)
    return estimator


def _set_linear(estimator: Any, model: GLMModel) -> None:
    estimator.coef_ = model.beta[1:].copy()
    estimator.intercept_ = float(model.beta[0])


def _weight_sum(model: GLMModel) -> float:
    value = model.meta.get("weight_sum")
    if not isinstance(value, int | float) or not value > 0:
        raise ConfigError(
            "This model's meta has no training weight sum, which scikit-learn's penalty "
            "convention needs (C = 1 / (alpha * W), Ridge alpha * W)."
        )
    return float(value)
