"""A trained bundle as users hold it: p-values, per-model summaries and predictions.

The saved model is every model's coefficients ``beta`` (n_chunked, k), intercept first then
the shared predictors then the chunk, its pooled Fisher matrix ``fisher`` (n_chunked, k, k)
and its deviance (the residual sum of squares for OLS). The covariance is ``inv(fisher)``
for logit and ``RSS / (n - k) * inv(fisher)`` for OLS -- statsmodels' ``Logit`` / ``OLS``
``cov_params()`` on the pooled rows -- with Wald z tests (logit) or t tests with ``n - k``
degrees of freedom (OLS), as statsmodels reports them.

A model that did not converge within the session's rounds carries its last iterate's
coefficients, standard errors and p-values, flagged in :attr:`LinearInferenceModel.converged`
and ``convergence_warnings``; building the model then warns with
:class:`~fedsilo.regression.newton.ConvergenceWarning`, as statsmodels' ``fit`` does. Only a
singular model (no estimate exists) is NaN, with its reason in ``reasons``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError, DataError
from fedsilo.packages.linear_inference.config import (
    LinearInferenceDataConfig,
    LinearInferenceModelConfig,
)
from fedsilo.regression.newton import ConvergenceWarning
from fedsilo.wire import Arrays

if TYPE_CHECKING:
    import torch

__all__ = ["LinearInferenceModel"]


class LinearInferenceModel:
    """The bundle of fitted models, one per chunked predictor.

    Parameters
    ----------
    model_config : LinearInferenceModelConfig
    data_config : LinearInferenceDataConfig
    arrays : dict of str to ndarray
        ``beta`` (n_chunked, k), ``fisher`` (n_chunked, k, k), ``deviance`` (n_chunked,).
    meta : dict
        What the workflow saved: resolved column names, ``num_rows``, ``reasons``, ...

    Raises
    ------
    ConfigError
        When an array is missing or does not match the data_config.
    """

    def __init__(
        self,
        model_config: LinearInferenceModelConfig,
        data_config: LinearInferenceDataConfig,
        arrays: Arrays,
        meta: dict[str, Any] | None = None,
    ) -> None:
        from scipy import stats  # type: ignore[import-untyped]

        self.model_config = model_config
        self.data_config = data_config
        self.meta = dict(meta or {})
        m = len(data_config.chunked_predictors)
        k = 2 + len(data_config.shared_predictors)
        for name, shape in (("beta", (m, k)), ("fisher", (m, k, k)), ("deviance", (m,))):
            if name not in arrays or np.shape(arrays[name]) != shape:
                got = "missing" if name not in arrays else f"of shape {np.shape(arrays[name])}"
                raise ConfigError(
                    f"A linear_inference model needs array {name!r} of shape {shape}; it is {got}."
                )
        self.linear = model_config.strategy.name == "LinearRegInference"
        self.coef_ = np.asarray(arrays["beta"], dtype=np.float64).copy()
        fisher = np.asarray(arrays["fisher"], dtype=np.float64)
        deviance = np.asarray(arrays["deviance"], dtype=np.float64)
        self.target = str(self.meta.get("target", data_config.target))
        self.shared_predictors = [
            str(c) for c in self.meta.get("shared_predictors", data_config.shared_predictors)
        ]
        self.chunked_predictors = [
            str(c) for c in self.meta.get("chunked_predictors", data_config.chunked_predictors)
        ]
        self.reasons: dict[str, str] = dict(self.meta.get("reasons") or {})
        self.convergence_warnings: dict[str, str] = dict(
            self.meta.get("convergence_warnings") or {}
        )
        # Models saved before the flag existed converged or were NaN (left out).
        flags = self.meta.get("converged") or {}
        self.converged_ = np.array(
            [bool(flags.get(c, c not in self.reasons)) for c in self.chunked_predictors]
        )
        self.df_resid = int(self.meta.get("df_resid", 0))
        ok = np.all(np.isfinite(self.coef_), axis=1)
        covariance = np.full((m, k, k), np.nan)
        if np.any(ok):
            covariance[ok] = np.linalg.inv(fisher[ok])
            if self.linear:
                dispersion = deviance[ok] / self.df_resid if self.df_resid > 0 else np.nan
                covariance[ok] *= np.asarray(dispersion).reshape(-1, 1, 1)
        self.bse_ = np.sqrt(np.diagonal(covariance, axis1=1, axis2=2))
        self.tvalues_ = self.coef_ / self.bse_
        if self.linear:
            self._quantile = (
                float(stats.t.ppf(0.975, self.df_resid)) if self.df_resid > 0 else np.nan
            )
            self.pvalues_ = 2.0 * stats.t.sf(np.abs(self.tvalues_), self.df_resid)
        else:
            self._quantile = float(stats.norm.ppf(0.975))
            self.pvalues_ = 2.0 * stats.norm.sf(np.abs(self.tvalues_))
        if self.convergence_warnings:
            names = list(self.convergence_warnings)
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            warnings.warn(
                f"{len(names)} of {m} linear_inference model(s) did not converge ({shown}): "
                f"{self.convergence_warnings[names[0]]}. See model.converged.",
                ConvergenceWarning,
                stacklevel=2,
            )

    @property
    def converged(self) -> pd.Series:
        """Whether each chunked predictor's model converged (False: the estimates are the
        last iterate's, see ``convergence_warnings``; or the model was left out, see
        ``reasons``).

        Returns
        -------
        Series of bool, shape (n_chunked,)
        """
        return pd.Series(self.converged_, index=self.chunked_predictors, name="converged")

    # ------------------------------------------------------------------ inference

    def p_values(self) -> pd.Series:
        """The p-value of each chunked predictor's coefficient in its own model.

        Returns
        -------
        Series of shape (n_chunked,)
            Indexed by chunked predictor; NaN for models left out (see :attr:`reasons`).
        """
        return pd.Series(self.pvalues_[:, -1], index=self.chunked_predictors, name="p_value")

    def summary(self, name: str | int) -> pd.DataFrame:
        """The coefficient table of the model of chunked predictor ``name``.

        Parameters
        ----------
        name : str or int
            A chunked predictor's name, or its position in ``chunked_predictors``.

        Returns
        -------
        DataFrame of shape (k, 6)
            Rows ``const``, the shared predictors, the chunk; columns ``coef``, ``std err``,
            ``z`` / ``t``, ``P>|z|`` / ``P>|t|``, ``[0.025``, ``0.975]`` (statsmodels'
            names). ``attrs["reason"]`` says why a left-out model is NaN,
            ``attrs["converged"]`` whether the fit converged and ``attrs["warning"]`` why
            not (the values are then the last iterate's).
        """
        j = self._index(name)
        statistic = "t" if self.linear else "z"
        half = self._quantile * self.bse_[j]
        frame = pd.DataFrame(
            {
                "coef": self.coef_[j],
                "std err": self.bse_[j],
                statistic: self.tvalues_[j],
                f"P>|{statistic}|": self.pvalues_[j],
                "[0.025": self.coef_[j] - half,
                "0.975]": self.coef_[j] + half,
            },
            index=["const", *self.shared_predictors, self.chunked_predictors[j]],
        )
        frame.attrs["reason"] = self.reasons.get(self.chunked_predictors[j], "")
        frame.attrs["converged"] = bool(self.converged_[j])
        frame.attrs["warning"] = self.convergence_warnings.get(self.chunked_predictors[j], "")
        return frame

    def _index(self, name: str | int) -> int:
        if isinstance(name, int) and not isinstance(name, bool):
            if 0 <= name < len(self.chunked_predictors):
                return name
        elif name in self.chunked_predictors:
            return self.chunked_predictors.index(name)
        shown = ", ".join(repr(c) for c in self.chunked_predictors[:10])
        raise KeyError(f"{name!r} is not a chunked predictor of this model; they are {shown}...")

    # ---------------------------------------------------------------- prediction

    def predict_arrays(self, shared: np.ndarray, chunked: np.ndarray) -> np.ndarray:
        """Every model's prediction.

        Parameters
        ----------
        shared : ndarray of shape (n_samples, n_shared)
        chunked : ndarray of shape (n_samples, n_chunked)

        Returns
        -------
        ndarray of shape (n_samples, n_chunked)
            Probabilities of class 1 (logit) or the predicted mean (OLS); NaN columns for
            models left out.
        """
        s = 1 + len(self.shared_predictors)
        eta = self.coef_[:, 0] + shared @ self.coef_[:, 1:s].T + chunked * self.coef_[:, s]
        if self.linear:
            result: np.ndarray = eta
            return result
        return np.asarray(1.0 / (1.0 + np.exp(-eta)))

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        """:meth:`predict_arrays` of a frame holding the shared and chunked columns.

        Raises
        ------
        DataError
            When a column is missing.
        """
        needed = [*self.shared_predictors, *self.chunked_predictors]
        missing = [c for c in needed if c not in data.columns]
        if missing:
            raise DataError(
                [f"missing column(s) {', '.join(repr(c) for c in missing[:10])}"],
                source="the prediction data",
            )
        shared = data[self.shared_predictors].to_numpy(dtype=np.float64)
        chunked = data[self.chunked_predictors].to_numpy(dtype=np.float64)
        return self.predict_arrays(shared.reshape(len(data), -1), chunked)

    def predict_proba(self, data: pd.DataFrame) -> list[np.ndarray]:
        """Class probabilities of every model, as scikit-learn's ``MultiOutputClassifier``.

        Returns
        -------
        list of ndarray of shape (n_samples, 2)
            One per chunked predictor, columns P(y = 0), P(y = 1) (the latter is that
            model's column of :meth:`predict`); NaN for models left out.

        Raises
        ------
        ConfigError
            For ``LinearRegInference`` (a continuous target has no class probabilities).
        DataError
            As :meth:`predict`.
        """
        if self.linear:
            raise ConfigError(
                "predict_proba needs strategy LogitRegInference; this bundle is "
                "LinearRegInference (a continuous target). Use predict() for the means."
            )
        p1 = self.predict(data)
        return [np.column_stack([1.0 - p1[:, j], p1[:, j]]) for j in range(p1.shape[1])]

    def as_pytorch(self) -> torch.nn.Module:
        """The bundle as a ``torch.nn.Module`` (with ``p_values`` and ``summary`` too)."""
        from fedsilo.packages.linear_inference.torch_model import LinearInferenceModule

        return LinearInferenceModule(self)
