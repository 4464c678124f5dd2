"""Model packages, registered by name in one place (:data:`REGISTRY`).

Packages are imported on first use, so a CLI call that needs none of them does not pay for
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.packages.base import ModelPackage

__all__ = ["REGISTRY", "get_package", "package_names"]

#: package name -> module that defines ``PACKAGE: ModelPackage``
REGISTRY: dict[str, str] = {
    "echo": "fedsilo.packages.echo",
    "eda": "fedsilo.packages.eda",
    "ffnet": "fedsilo.packages.ffnet",
    "gbm": "fedsilo.packages.gbm",
    "glm": "fedsilo.packages.glm",
    "linear_inference": "fedsilo.packages.linear_inference",
}


def package_names() -> list[str]:
    return sorted(REGISTRY)


def get_package(name: str) -> ModelPackage[Any, Any]:
    """The package registered as ``name``.

    Raises
    ------
    ConfigError
        When no package has that name; the message lists the known ones.
    """
    module_name = REGISTRY.get(name)
    if module_name is None:
        known = ", ".join(package_names())
        raise ConfigError(f"Unknown package_name {name!r}. Known packages: {known}.")
    module = importlib.import_module(module_name)
    package: ModelPackage[Any, Any] = module.PACKAGE
    return package
