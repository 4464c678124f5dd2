"""gbm: federated histogram gradient boosting (binary classification and regression).

Round 0 merges every client's DDSketch of each predictor into global bin cuts; each tree is
then grown from the pooled gradient/hessian histograms of its frontier nodes, split exactly
as scikit-learn's HistGradientBoosting would split the pooled binned rows.

Parts, after scikit-learn's ``_hist_gradient_boosting``: ``config.py`` (model_config /
data_config), ``binning.py`` (sketches to bin cuts), ``histograms.py`` (the client's sums),
``splitting.py`` (gains and tree growth), ``predictor.py`` (the forest as arrays),
``client.py`` (the executor), ``server.py`` (the workflow), ``export.py`` (the user's model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.packages import lazy_exports
from fedsilo.packages.gbm.config import GBMDataConfig, GBMModelConfig
from fedsilo.packages.gbm.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.gbm.client import GBMExecutor
    from fedsilo.packages.gbm.export import (
        FederatedHistGradientBoostingClassifier,
        FederatedHistGradientBoostingRegressor,
        GBMModel,
    )

__getattr__ = lazy_exports(
    __name__,
    {
        "GBMExecutor": "fedsilo.packages.gbm.client",
        "FederatedHistGradientBoostingClassifier": "fedsilo.packages.gbm.export",
        "FederatedHistGradientBoostingRegressor": "fedsilo.packages.gbm.export",
        "GBMModel": "fedsilo.packages.gbm.export",
    },
)

__all__ = [
    "PACKAGE",
    "FederatedHistGradientBoostingClassifier",
    "FederatedHistGradientBoostingRegressor",
    "GBMDataConfig",
    "GBMExecutor",
    "GBMModel",
    "GBMModelConfig",
    "run",
]

PACKAGE: ModelPackage[GBMModelConfig, GBMDataConfig] = ModelPackage(
    name="gbm",
    description=(
        "Federated histogram gradient boosting (binary classification, regression): global "
        "bins from merged DDSketches, trees split on pooled gradient histograms exactly as "
        "scikit-learn's HistGradientBoosting would."
    ),
    kind=SessionKind.hfl,
    model_config_type=GBMModelConfig,
    data_config_type=GBMDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.gbm.client:GBMExecutor",
    export_ref="fedsilo.packages.gbm.export:GBMModel",
)
