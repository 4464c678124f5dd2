"""A trained GLM as users hold it: predictions, a scikit-learn estimator, a torch module and
a statsmodels-style coefficient table.

The saved model is the coefficient vector ``beta`` (intercept first) and, for Newton fits,
the pooled Fisher matrix at ``beta`` (``sum_i s_i w_i x~_i x~_i^T``, see
:mod:`fedsilo.regression.newton`) with the dispersion estimate in the model meta, from
which :meth:`GLMModel.summary` computes standard errors exactly as statsmodels does on the
pooled rows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsilo.data.validation import find_problems
from fedsilo.errors import ConfigError, DataError
from fedsilo.packages.glm.config import GLMDataConfig, GLMModelConfig
from fedsilo.wire import Arrays

if TYPE_CHECKING:
    import torch

__all__ = ["GLMModel"]


class GLMModel:
    """A GLM's coefficients with their configs.

    Parameters
    ----------
    model_config : GLMModelConfig
    data_config : GLMDataConfig
    arrays : dict of str to ndarray
        ``beta`` of shape (1 + n_features,); Newton fits add ``fisher`` of shape (k, k).
    meta : dict
        What the workflow saved (solver, rounds, convergence, dispersion, weight sum, ...).

    Raises
    ------
    ConfigError
        When ``beta`` is missing or its length does not match the predictors.
    """

    def __init__(
        self,
        model_config: GLMModelConfig,
        data_config: GLMDataConfig,
        arrays: Arrays,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model_config = model_config
        self.data_config = data_config
        self.meta = dict(meta or {})
        self.family = model_config.family()
        k = 1 + len(data_config.predictors)
        beta = arrays.get("beta")
        if beta is None or np.shape(beta) != (k,):
            got = "missing" if beta is None else f"of shape {np.shape(beta)}"
            raise ConfigError(
                f"A glm model needs array 'beta' of shape ({k},) (intercept and one "
                f"coefficient per predictor); it is {got}."
            )
        self.beta = np.asarray(beta, dtype=np.float64).copy()
        fisher = arrays.get("fisher")
        self._fisher = None if fisher is None else np.asarray(fisher, dtype=np.float64)

    # ------------------------------------------------------------------ attributes

    @property
    def predictors(self) -> list[str]:
        """The columns :meth:`predict` reads, in coefficient order."""
        return list(self.data_config.predictors)

    @property
    def intercept_(self) -> float:
        return float(self.beta[0])

    @property
    def coef_(self) -> np.ndarray:
        """The predictor coefficients; shape (n_features,)."""
        return self.beta[1:].copy()

    @property
    def coefficients(self) -> pd.Series:
        """``beta`` as a Series indexed by ``intercept`` and the predictor names."""
        return pd.Series(self.beta, index=self._index(), name="coef")

    # ------------------------------------------------------------------ prediction

    def linear_predictor(self, data: pd.DataFrame, *, with_offset: bool = True) -> np.ndarray:
        """``eta = intercept + x . coef (+ offset + log(exposure))`` for each row.

        Parameters
        ----------
        data : DataFrame of shape (n_samples, n_columns)
            Must hold the predictors and, when ``with_offset`` and the data_config names
            them, the offset / exposure columns.
        with_offset : bool, default True
            False predicts at offset 0 / exposure 1 (e.g. a rate per unit of exposure), as
            the estimator of :meth:`as_sklearn` does.

        Returns
        -------
        ndarray of shape (n_samples,), float64

        Raises
        ------
        DataError
            Listing missing, non-numeric, null or infinite columns and exposures <= 0.
        """
        dc = self.data_config
        extra = [c for c in (dc.offset, dc.exposure) if c is not None] if with_offset else []
        problems = find_problems(data, [*dc.predictors, *extra], source="prediction data")
        if not problems and with_offset and dc.exposure is not None:
            bad = int((data[dc.exposure].to_numpy(dtype=np.float64) <= 0).sum())
            if bad:
                problems.append(
                    f"prediction data: exposure column {dc.exposure!r} has {bad} value(s) <= 0"
                )
        if problems:
            raise DataError(problems, source="prediction data")
        features = data[dc.predictors].to_numpy(dtype=np.float64)
        eta: np.ndarray = features @ self.beta[1:] + self.beta[0]
        if with_offset and dc.offset is not None:
            eta = eta + data[dc.offset].to_numpy(dtype=np.float64)
        if with_offset and dc.exposure is not None:
            eta = eta + np.log(data[dc.exposure].to_numpy(dtype=np.float64))
        return eta

    def predict_mean(self, data: pd.DataFrame, *, with_offset: bool = True) -> np.ndarray:
        """The fitted mean ``mu = h(eta)`` per row (for logistic: P(y = 1)); shape (n_samples,)."""
        with np.errstate(over="ignore"):
            return self.family.mean(self.linear_predictor(data, with_offset=with_offset))

    def predict(self, data: pd.DataFrame, *, with_offset: bool = True) -> np.ndarray:
        """Predictions for the rows of ``data``, as the scikit-learn estimator makes them.

        Returns
        -------
        ndarray of shape (n_samples,)
            Logistic: the class label (int64; 1 where ``eta > 0``). Others: the mean ``mu``.
        """
        if self.family.task == "logistic":
            labels: np.ndarray = (self.linear_predictor(data, with_offset=with_offset) > 0).astype(
                np.int64
            )
            return labels
        return self.predict_mean(data, with_offset=with_offset)

    def predict_proba(self, data: pd.DataFrame, *, with_offset: bool = True) -> np.ndarray:
        """Class probabilities (logistic only); shape (n_samples, 2), columns P(0), P(1).

        Raises
        ------
        ConfigError
            For a family other than logistic.
        """
        if self.family.task != "logistic":
            raise ConfigError(
                f"predict_proba needs a logistic model; this one is {self.family}. "
                "Use predict() for the mean."
            )
        p1 = self.predict_mean(data, with_offset=with_offset)
        return np.column_stack([1.0 - p1, p1])

    # ------------------------------------------------------------------ exports

    def as_sklearn(self) -> Any:
        """A fitted scikit-learn estimator whose predictions equal :meth:`predict` at offset 0.

        ======================  ====================================================
        family (link)           estimator
        ======================  ====================================================
        logistic                ``LogisticRegression(C=1/(alpha W), l1_ratio)``
        normal (identity)       ``LinearRegression`` (alpha = 0), ``Ridge(alpha W)``
                                (l1_ratio = 0), ``Lasso`` (1), ``ElasticNet``
        normal (log)            ``TweedieRegressor(power=0, link="log")``
        poisson                 ``PoissonRegressor``
        gamma                   ``GammaRegressor``
        inverseGaussian         ``TweedieRegressor(power=3, link="log")``
        tweedie                 ``TweedieRegressor(power, link="log")``
        normal (tanh output)    none: a ConfigError (use predict or as_pytorch)
        ======================  ====================================================

        The hyperparameters are those under which scikit-learn minimises the same objective
        (``W`` is the sum of the training sample weights over all silos), so ``fit`` on the
        pooled rows would land on the same coefficients. scikit-learn's GLM regressors have
        no L1 penalty: for them ``alpha`` is set to the L2 part ``alpha * (1 - l1_ratio)``,
        and refitting would drop the L1 part. The fitted attributes (``coef_``,
        ``intercept_``, ``n_features_in_``, ``feature_names_in_``, ``classes_``) are set, so
        ``predict`` works on a DataFrame of the predictor columns.
        """
        from fedsilo.packages.glm.sklearn_export import build_estimator

        return build_estimator(self)

    def as_pytorch(self, dtype: torch.dtype | None = None) -> torch.nn.Module:
        """The model as ``Sequential(linear=Linear(n_features, 1), inverse_link=...)``.

        Parameters
        ----------
        dtype : torch.dtype, default torch.float64
            The module's dtype; float64 keeps the coefficients exact.

        Returns
        -------
        torch.nn.Module
            In eval mode; maps inputs of shape (n_samples, n_features) to the mean of shape
            (n_samples, 1) (P(y = 1) for logistic), offsets not included.
        """
        import torch
        from torch import nn

        from fedsilo.packages.glm.local_sgd import inverse_link_module

        chosen = torch.float64 if dtype is None else dtype
        linear = nn.Linear(len(self.predictors), 1, dtype=chosen)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(self.beta[1:], dtype=chosen).reshape(1, -1))
            linear.bias.copy_(torch.as_tensor(self.beta[:1], dtype=chosen))
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            linear=linear, inverse_link=inverse_link_module(self.family.activation)
        )
        module = nn.Sequential(layers)
        module.eval()
        return module

    def summary(self, confidence: float = 0.95) -> pd.DataFrame:
        """The coefficient table of an unpenalized Newton fit, as statsmodels computes it.

        Standard errors are ``sqrt(diag(scale * F^-1))`` with ``F`` the pooled Fisher matrix
        at the fitted coefficients and ``scale`` 1 for logistic and Poisson, else Pearson
        chi^2 / (n - k). Families with an estimated scale use Student's t with n - k degrees
        of freedom (as R's ``glm`` and statsmodels ``use_t=True``); logistic and Poisson use
        the normal distribution (z).

        Parameters
        ----------
        confidence : float in (0, 1), default 0.95
            Level of the confidence interval.

        Returns
        -------
        DataFrame indexed by ``intercept`` and the predictors
            Columns ``coef``, ``std_err``, ``z`` or ``t``, ``p_value``, ``ci_lower``,
            ``ci_upper``.

        Raises
        ------
        ConfigError
            For a penalized fit (alpha > 0: no unbiased standard errors), an sgd fit (no
            Fisher matrix), or too few rows to estimate the scale.
        """
        from scipy import stats  # type: ignore[import-untyped]  # no stubs shipped

        if not 0.0 < confidence < 1.0:
            raise ConfigError(f"confidence must be in (0, 1). Got {confidence}.")
        covariance, df_resid = self._covariance()
        std_err = np.sqrt(np.diag(covariance))
        statistic = self.beta / std_err
        use_t = self.family.estimates_scale
        tail = (1.0 + confidence) / 2.0
        if use_t:
            p_value = 2.0 * stats.t.sf(np.abs(statistic), df_resid)
            quantile = float(stats.t.ppf(tail, df_resid))
        else:
            p_value = 2.0 * stats.norm.sf(np.abs(statistic))
            quantile = float(stats.norm.ppf(tail))
        return pd.DataFrame(
            {
                "coef": self.beta,
                "std_err": std_err,
                "t" if use_t else "z": statistic,
                "p_value": p_value,
                "ci_lower": self.beta - quantile * std_err,
                "ci_upper": self.beta + quantile * std_err,
            },
            index=self._index(),
        )

    def covariance(self) -> pd.DataFrame:
        """The coefficients' covariance matrix ``scale * F^-1`` (see :meth:`summary`)."""
        covariance, _ = self._covariance()
        index = self._index()
        return pd.DataFrame(covariance, index=index, columns=index)

    def _covariance(self) -> tuple[np.ndarray, int]:
        if self.meta.get("privacy") is not None:
            raise ConfigError(
                "summary() is not available for a differentially private fit: standard "
                "errors from the noisy Fisher information would ignore the privacy noise."
            )
        if self.model_config.ml_task.params.alpha > 0:
            raise ConfigError(
                "summary() needs an unpenalized fit: penalized coefficients are biased and have "
                f"no standard errors of this form. This model has alpha="
                f"{self.model_config.ml_task.params.alpha:g}."
            )
        if self._fisher is None:
            raise ConfigError(
                "summary() needs the Fisher information of a 'newton' fit; this model was "
                f"fitted with solver {self.meta.get('solver', self.model_config.solver)!r}."
            )
        scale = self.meta.get("scale")
        if scale is None or not math.isfinite(float(scale)):
            raise ConfigError(
                f"summary() cannot estimate the scale: {self.meta.get('num_rows')} rows for "
                f"{self.beta.size} coefficients leave no residual degrees of freedom."
            )
        covariance: np.ndarray = float(scale) * np.linalg.inv(self._fisher)
        return covariance, int(self.meta.get("df_resid", 0))

    def _index(self) -> pd.Index:
        return pd.Index(["intercept", *self.predictors])

    def __repr__(self) -> str:
        return (
            f"GLMModel(family={self.family.task!r}, link={self.family.link!r}, "
            f"n_features={len(self.predictors)}, solver={self.meta.get('solver')!r}, "
            f"round={self.meta.get('round')!r}, converged={self.meta.get('converged')!r})"
        )
