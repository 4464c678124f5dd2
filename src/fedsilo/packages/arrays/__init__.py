"""``arrays``: the model is whatever numpy arrays the clients' own code returns.

For bring-your-own client code (:func:`fedsilo.client.start_client`, seed 001): each silo
runs its own ``get_parameters`` / ``fit`` / ``evaluate`` around any ML library, and the
server only combines the arrays with the session's strategy on the shared round loop
(:mod:`fedsilo.workflows.rounds`). The server imports no model code and no ML library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.packages import lazy_exports
from fedsilo.packages.arrays.config import ArraysDataConfig, ArraysModelConfig
from fedsilo.packages.arrays.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.arrays.client import ArraysExecutor
    from fedsilo.packages.arrays.export import ArraysModel

__getattr__ = lazy_exports(
    __name__,
    {
        "ArraysExecutor": "fedsilo.packages.arrays.client",
        "ArraysModel": "fedsilo.packages.arrays.export",
    },
)

PACKAGE: ModelPackage[ArraysModelConfig, ArraysDataConfig] = ModelPackage(
    name="arrays",
    description="Your own client code (get_parameters/fit/evaluate, any ML library); the "
    "server aggregates its numpy arrays with the session's strategy.",
    kind=SessionKind.hfl,
    model_config_type=ArraysModelConfig,
    data_config_type=ArraysDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.arrays.client:ArraysExecutor",
    export_ref="fedsilo.packages.arrays.export:ArraysModel",
)

__all__ = ["PACKAGE", "ArraysExecutor", "ArraysModel"]
