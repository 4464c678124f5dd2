"""eda: federated exploratory data analysis of datasets nobody may see, in individual mode.

Each client analyses one named dataset and sends per-column aggregates only -- counts,
moments, a quantile sketch, a histogram on agreed bin edges, value counts -- with
differential privacy applied on the client when the session sets ``epsilon``. The server
agrees column kinds and bin edges across datasets and saves the results, which the SDK reads
as :class:`~fedsilo.analytics.results.EdaResults` (``session.results()``).

Under ``secure_aggregation`` the server learns only sums over every dataset and the results
hold the pooled dataset alone (``secure_server.py``, ``secure_client.py``).

Parts: ``config.py`` (model_config / data_config), ``client.py`` (the executor),
``server.py`` (the workflow), ``secure_client.py`` / ``secure_server.py`` (the same under
secure aggregation), ``export.py`` (the saved artifact). The statistics themselves live in
:mod:`fedsilo.analytics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.federation.binding import NAMED_DATASET
from fedsilo.packages import lazy_exports
from fedsilo.packages.eda.config import EdaDataConfig, EdaModelConfig, check_consistency
from fedsilo.packages.eda.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.eda.client import EdaExecutor
    from fedsilo.packages.eda.export import EdaExport

__getattr__ = lazy_exports(
    __name__,
    {
        "EdaExecutor": "fedsilo.packages.eda.client",
        "EdaExport": "fedsilo.packages.eda.export",
    },
)

__all__ = ["PACKAGE", "EdaDataConfig", "EdaExecutor", "EdaExport", "EdaModelConfig", "run"]

PACKAGE: ModelPackage[EdaModelConfig, EdaDataConfig] = ModelPackage(
    name="eda",
    description=(
        "Exploratory data analysis across silos: summary statistics, quantiles and "
        "histograms per column, with client-side differential privacy."
    ),
    kind=SessionKind.eda,
    model_config_type=EdaModelConfig,
    data_config_type=EdaDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.eda.client:EdaExecutor",
    export_ref="fedsilo.packages.eda.export:EdaExport",
    check=check_consistency,
    binding=NAMED_DATASET,
)
