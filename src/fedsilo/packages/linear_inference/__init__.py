"""linear_inference: a bundle of regressions with p-values (GWAS), fitted exactly across silos.

One model per chunked predictor -- ``target ~ shared_predictors + that predictor`` -- for every
chunked predictor at once: each silo computes all the models' Newton statistics in one
vectorised pass, the server sums them and solves all the Newton steps in one batched solve
(:func:`fedsilo.regression.newton.batched_newton_point`). Strategies: ``LogitRegInference``
(binary target, Wald z tests) and ``LinearRegInference`` (OLS, t tests). The coefficients,
standard errors and p-values equal statsmodels' ``Logit`` / ``OLS`` on the pooled rows.

Parts: ``config.py``, ``bundle.py`` (the vectorised statistics), ``client.py`` (the executor),
``server.py`` (the workflow), ``export.py`` (p-values, summaries, predictions),
``torch_model.py`` (the torch module) and ``dataset.py`` (the seed's ``ChunkedTabularDataset``,
also importable from this package; torch is imported only when it is used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.packages import lazy_exports
from fedsilo.packages.linear_inference.config import (
    LinearInferenceDataConfig,
    LinearInferenceModelConfig,
)
from fedsilo.packages.linear_inference.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.linear_inference.client import LinearInferenceExecutor
    from fedsilo.packages.linear_inference.dataset import ChunkedTabularDataset
    from fedsilo.packages.linear_inference.export import LinearInferenceModel

__getattr__ = lazy_exports(
    __name__,
    {
        "ChunkedTabularDataset": "fedsilo.packages.linear_inference.dataset",
        "LinearInferenceExecutor": "fedsilo.packages.linear_inference.client",
        "LinearInferenceModel": "fedsilo.packages.linear_inference.export",
    },
)

__all__ = [
    "PACKAGE",
    "ChunkedTabularDataset",
    "LinearInferenceDataConfig",
    "LinearInferenceExecutor",
    "LinearInferenceModel",
    "LinearInferenceModelConfig",
    "run",
]

PACKAGE: ModelPackage[LinearInferenceModelConfig, LinearInferenceDataConfig] = ModelPackage(
    name="linear_inference",
    description=(
        "A bundle of logistic (LogitRegInference) or linear (LinearRegInference) regressions, "
        "one per chunked predictor, with standard errors and p-values equal to statsmodels' "
        "on the pooled rows (GWAS)."
    ),
    kind=SessionKind.hfl,
    model_config_type=LinearInferenceModelConfig,
    data_config_type=LinearInferenceDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.linear_inference.client:LinearInferenceExecutor",
    export_ref="fedsilo.packages.linear_inference.export:LinearInferenceModel",
)
