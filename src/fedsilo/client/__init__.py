"""The client that runs next to a silo's data and works on a session's tasks.

Parts: :mod:`~fedsilo.client.connection` (the participant's HTTP calls, backoff),
:mod:`~fedsilo.client.loop` (decode, middleware, executor, reply),
:mod:`~fedsilo.client.mods` (client-side middleware: release-once, DP accounting),
:mod:`~fedsilo.client.context` (what an executor is lent), :mod:`~fedsilo.client.keys` and
:mod:`~fedsilo.client.runtime` (the facade), :mod:`~fedsilo.client.byo` (``start_client``: your
own client code). The tables a package reads are declared and
loaded by :mod:`fedsilo.federation.binding`, part of the package contract. Attributes are
imported on first use, so importing one part does not pull the runtime in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsilo.client.byo import ByoClientRuntime, NumPyClient, start_client
    from fedsilo.client.runtime import ClientRuntime, PreparedData

__all__ = ["ByoClientRuntime", "ClientRuntime", "NumPyClient", "PreparedData", "start_client"]

#: public name -> the module defining it (bring-your-own client code lives in byo.py)
_MODULES = {
    "ByoClientRuntime": "fedsilo.client.byo",
    "ClientRuntime": "fedsilo.client.runtime",
    "NumPyClient": "fedsilo.client.byo",
    "PreparedData": "fedsilo.client.runtime",
    "start_client": "fedsilo.client.byo",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'fedsilo.client' has no attribute {name!r}")
