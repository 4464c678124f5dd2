"""prl: private record linkage -- which records several silos share, and their alignment.

Each client names the columns that identify a record (``data_config["clients"]``). The
session finds the records every client holds without any id leaving a silo in the clear
(private set intersection) and stores, for the train and the test table separately, the
row positions of those records at each client in one common order (private record
alignment; :class:`~fedsilo.vfl.alignment.Alignment`), which VFL sessions use.

Protocols (``data_config["psi_protocol"]``):

``keyed_hash`` (default, any number of clients)
    The clients agree a 256-bit secret: the first client draws it and seals it to each
    other client with their X25519 join keys, through the server, which cannot open it.
    Each client sends BLAKE2b-128 keyed hashes of its canonical id records; the server
    intersects the hashes. The server learns the table sizes, the intersection size and
    which row positions are shared -- no ids, and it cannot test a guess without the key.
``ecdh`` (two clients)
    Diffie-Hellman PSI in a prime-order group (:mod:`fedsilo.privacy.ecdh`): the clients
    exchange blinded ids, sealed to each other through the server. Each client learns the
    other's table size and which of its own records are shared; the server learns sizes and
    the shared row positions. Nothing testable against a guessed id leaves a silo, even to
    a client that colludes with the server.

Parts: ``config.py``, ``client.py`` (the executor; canonical ids and their checks before
joining), ``server.py`` (the workflow), ``export.py``. The cryptography lives in
:mod:`fedsilo.privacy.psi` and :mod:`fedsilo.privacy.ecdh`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.federation.binding import DataBinding, TableSpec
from fedsilo.packages import lazy_exports
from fedsilo.packages.prl.config import PrlDataConfig, PrlModelConfig
from fedsilo.packages.prl.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.prl.client import PrlExecutor
    from fedsilo.packages.prl.export import PrlExport

__getattr__ = lazy_exports(
    __name__,
    {
        "PrlExecutor": "fedsilo.packages.prl.client",
        "PrlExport": "fedsilo.packages.prl.export",
    },
)

__all__ = [
    "BINDING",
    "PACKAGE",
    "PrlDataConfig",
    "PrlExecutor",
    "PrlExport",
    "PrlModelConfig",
    "run",
]

#: a train table and an optional test table, aligned separately
BINDING = DataBinding(
    tables=(
        TableSpec("train", required=True, option="--train-path"),
        TableSpec("test", required=False, option="--test-path"),
    ),
    join_hint="`fedsilo client prl --train-path P --test-path Q --client-name NAME`",
)

PACKAGE: ModelPackage[PrlModelConfig, PrlDataConfig] = ModelPackage(
    name="prl",
    description=(
        "Private record linkage: the records several silos share (private set "
        "intersection on keyed hashes or ECDH) and their row alignment, for VFL."
    ),
    kind=SessionKind.prl,
    model_config_type=PrlModelConfig,
    data_config_type=PrlDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.prl.client:PrlExecutor",
    export_ref="fedsilo.packages.prl.export:PrlExport",
    binding=BINDING,
)
