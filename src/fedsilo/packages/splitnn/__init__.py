"""splitnn: vertical federated learning with a split neural network (SplitNN).

The parties hold different columns of the same people, linked by a private record linkage
session (package ``prl``; :class:`~fedsilo.vfl.alignment.Alignment`). Each party with
predictors trains a *feature model* on its columns; the *label client* (the active party,
which holds the target) trains the *label model* on the feature models' outputs side by
side. Per mini-batch the passive parties send their embeddings to the active party and
receive their gradients, sealed to the recipient over the server's in-memory fast exchange:
the server relays what it cannot read and holds no part of the network.

Sessions are of kind ``vfl``; the SDK's ``create_vfl_session(..., package_name="ffnet",
vfl_mode="train" | "predict")`` creates them (the seed's spelling: VFL is ffnet's vertical
mode), putting ``vfl_mode``, ``prl_session_id`` and ``training_session_id`` in the
model_config. Clients join with ``fedsilo client vfl-train`` / ``vfl-predict``.

Parts: ``config.py``, ``model.py`` (the parts, the shared batch order, the central
reference), ``channel.py`` (sealed per-batch messages), ``training.py`` (one party's
protocol), ``parts.py`` (checkpoints at the storage path), ``client.py`` (the executor),
``server.py`` (the workflow), ``export.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.federation.binding import DataBinding, TableSpec
from fedsilo.packages import lazy_exports
from fedsilo.packages.splitnn.config import (
    SplitnnDataConfig,
    SplitnnModelConfig,
    check_consistency,
    parameter_count,
)
from fedsilo.packages.splitnn.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.splitnn.client import SplitnnExecutor
    from fedsilo.packages.splitnn.export import SplitnnRecord

__getattr__ = lazy_exports(
    __name__,
    {
        "SplitnnExecutor": "fedsilo.packages.splitnn.client",
        "SplitnnRecord": "fedsilo.packages.splitnn.export",
    },
)

__all__ = [
    "BINDING",
    "PACKAGE",
    "SplitnnDataConfig",
    "SplitnnExecutor",
    "SplitnnModelConfig",
    "SplitnnRecord",
    "run",
]

#: training reads a train and a test table; prediction one table, given as the test role
#: (it is aligned with the PRL session's test table)
BINDING = DataBinding(
    tables=(
        TableSpec("train", required=False, option="--train-path"),
        TableSpec("test", required=False, option="--test-path"),
    ),
    join_hint=(
        "`fedsilo client vfl-train --train-path P --test-path Q --storage-path DIR "
        "--client-name NAME` (or `vfl-predict --dataset-path P --storage-path FILE`)"
    ),
)

PACKAGE: ModelPackage[SplitnnModelConfig, SplitnnDataConfig] = ModelPackage(
    name="splitnn",
    description=(
        "Vertical federated learning: a split neural network (SplitNN) over the columns "
        "several silos hold of the same records (aligned by a PRL session); embeddings and "
        "gradients travel sealed between the parties."
    ),
    kind=SessionKind.vfl,
    model_config_type=SplitnnModelConfig,
    data_config_type=SplitnnDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.splitnn.client:SplitnnExecutor",
    export_ref="fedsilo.packages.splitnn.export:SplitnnRecord",
    check=check_consistency,
    binding=BINDING,
    parameter_count=parameter_count,
)
