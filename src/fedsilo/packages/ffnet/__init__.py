"""ffnet: a feed-forward neural network trained by horizontal federated learning.

Linear layers with one activation after each hidden layer, for classification (cross-entropy
on logits) or regression (mean squared error), trained with SGD on each client and combined
by a strategy from :mod:`fedsilo.strategies` (FedAvg by default).

Parts: ``config.py`` (model_config / data_config), ``model.py`` (the network),
``client.py`` (the executor), ``server.py`` (the workflow), ``export.py`` (the user's
model), ``central.py`` (the pooled-data baseline). Importing this module imports no torch:
the executor, the export and the network are re-exported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.packages import lazy_exports
from fedsilo.packages.ffnet.config import (
    FFNetDataConfig,
    FFNetModelConfig,
    check_consistency,
    parameter_count,
)
from fedsilo.packages.ffnet.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.ffnet.central import evaluate, train_central
    from fedsilo.packages.ffnet.client import FFNetExecutor
    from fedsilo.packages.ffnet.export import FFNetModel
    from fedsilo.packages.ffnet.model import build_module

__all__ = [
    "PACKAGE",
    "FFNetDataConfig",
    "FFNetExecutor",
    "FFNetModel",
    "FFNetModelConfig",
    "build_module",
    "check_consistency",
    "evaluate",
    "run",
    "train_central",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "FFNetExecutor": "fedsilo.packages.ffnet.client",
        "FFNetModel": "fedsilo.packages.ffnet.export",
        "build_module": "fedsilo.packages.ffnet.model",
        "evaluate": "fedsilo.packages.ffnet.central",
        "train_central": "fedsilo.packages.ffnet.central",
    },
)

PACKAGE: ModelPackage[FFNetModelConfig, FFNetDataConfig] = ModelPackage(
    name="ffnet",
    description=(
        "Feed-forward neural network (PyTorch) for classification or regression, trained "
        "across silos with FedAvg-family strategies."
    ),
    kind=SessionKind.hfl,
    model_config_type=FFNetModelConfig,
    data_config_type=FFNetDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.ffnet.client:FFNetExecutor",
    export_ref="fedsilo.packages.ffnet.export:FFNetModel",
    check=check_consistency,
    parameter_count=parameter_count,
)
