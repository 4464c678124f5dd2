"""The built-in model packages, one folder each (registered in
:data:`fedsilo.federation.package.REGISTRY`). No package imports another package.

A package's ``__init__`` is what the server imports (for ``PACKAGE`` and its workflow), so it
imports only its configs and workflow; the client half and the export (torch, scikit-learn)
are re-exported lazily, on first attribute access (PEP 562), through :func:`lazy_exports`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing each of ``exports`` (name -> module) on first use.

    Examples
    --------
    In ``fedsilo/packages/ffnet/__init__.py``::

        __getattr__ = lazy_exports(__name__, {"FFNetExecutor": "fedsilo.packages.ffnet.client"})
    """

    def module_getattr(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return module_getattr
