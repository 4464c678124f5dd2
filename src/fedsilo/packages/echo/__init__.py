"""``echo``: a diagnostic package whose clients answer at once.

Each round the server broadcasts a float32 vector of ``payload_size`` values; every client
sends it back unchanged with its row count, and the server averages the replies. It trains
nothing: it measures what the platform itself costs per round (queueing, long-poll delivery,
codec, HTTP) and exercises the engine's failure policy and restart path without model code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsilo.federation import ModelPackage
from fedsilo.packages import lazy_exports
from fedsilo.packages.echo.config import EchoDataConfig, EchoModelConfig
from fedsilo.packages.echo.server import run
from fedsilo.wire import SessionKind

if TYPE_CHECKING:
    from fedsilo.packages.echo.client import EchoExecutor
    from fedsilo.packages.echo.export import EchoModel

__getattr__ = lazy_exports(
    __name__,
    {
        "EchoExecutor": "fedsilo.packages.echo.client",
        "EchoModel": "fedsilo.packages.echo.export",
    },
)

PACKAGE: ModelPackage[EchoModelConfig, EchoDataConfig] = ModelPackage(
    name="echo",
    description="Diagnostic: clients echo the broadcast; measures per-round platform overhead.",
    kind=SessionKind.hfl,
    model_config_type=EchoModelConfig,
    data_config_type=EchoDataConfig,
    workflow=run,
    executor_ref="fedsilo.packages.echo.client:EchoExecutor",
    export_ref="fedsilo.packages.echo.export:EchoModel",
)

__all__ = ["PACKAGE", "EchoExecutor", "EchoModel"]
