"""The package contract and the registry of packages.

A package is one folder under ``packages/`` with both halves of one family of models:

* ``config.py`` -- pydantic models for its ``model_config`` and ``data_config``;
* ``server.py`` -- ``run(ctx, model_config, data_config)``, the workflow the engine runs in its
  own worker, talking to clients only through
  :class:`~fedsilo.federation.context.SessionContext`;
* ``client.py`` -- an :class:`~fedsilo.federation.executor.Executor`;
* ``export.py`` -- turns the saved model into user objects.

The package is described by one :class:`ModelPackage` value and registered by name in
:data:`REGISTRY`. Packages are imported on first use, so a CLI call or a server that needs
none of them does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from fedsilo.errors import ConfigError
from fedsilo.federation.binding import TRAIN_TEST, DataBinding
from fedsilo.federation.context import SessionContext
from fedsilo.federation.executor import Executor, ExecutorContext, ExportedModel
from fedsilo.wire import Arrays, SessionKind, format_validation_error

if TYPE_CHECKING:
    from fedsilo.data.dataset import LocalDataset

__all__ = [
    "PACKAGE_SOURCES",
    "REGISTRY",
    "DataConfigBase",
    "ExecutorFactory",
    "ModelPackage",
    "get_package",
    "package_names",
]


class DataConfigBase(BaseModel):
    """Base of every package's data_config: it knows which columns it reads."""

    def required_columns(self) -> list[str]:
        raise NotImplementedError


MC = TypeVar("MC", bound=BaseModel)
DC = TypeVar("DC", bound=DataConfigBase)
MC_contra = TypeVar("MC_contra", bound=BaseModel, contravariant=True)
DC_contra = TypeVar("DC_contra", bound=DataConfigBase, contravariant=True)


class ExecutorFactory(Protocol[MC_contra, DC_contra]):
    """Builds a package's executor for one participant (usually the executor class)."""

    def __call__(
        self,
        model_config: MC_contra,
        data_config: DC_contra,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> Executor: ...


@dataclass(frozen=True)
class ModelPackage(Generic[MC, DC]):
    """One registered package: its configs and its two halves plus export."""

    name: str
    description: str
    kind: SessionKind
    model_config_type: type[MC]
    data_config_type: type[DC]
    workflow: Callable[[SessionContext, MC, DC], None]
    #: ``"module:attribute"`` of the executor factory, imported on first use: the server
    #: never imports a package's client half (nor torch, for a package whose client uses it)
    executor_ref: str
    #: ``"module:attribute"`` of the export callable ``(mc, dc, arrays, meta) -> model``
    export_ref: str
    #: cross-checks between the two configs (e.g. input_size vs predictors); raises ConfigError
    check: Callable[[MC, DC], None] | None = None
    #: the tables the client reads, by role (:mod:`fedsilo.federation.binding`): a train and an
    #: optional test table by default; EDA declares one named dataset
    binding: DataBinding = TRAIN_TEST
    #: how many numbers the model holds, computed from the model_config alone (no torch, no
    #: allocation), so a session too large for the server is refused at creation; None for
    #: packages whose size the config does not fix (trees, statistics)
    parameter_count: Callable[[MC], int] | None = None

    @property
    def executor(self) -> ExecutorFactory[MC, DC]:
        """The executor factory (imports the package's client half)."""
        factory: ExecutorFactory[MC, DC] = _resolve(self.executor_ref, self.name, "executor_ref")
        return factory

    @property
    def export(self) -> Callable[[MC, DC, Arrays, dict[str, Any]], ExportedModel]:
        """The export callable (imports the package's export half)."""
        exporter: Callable[[MC, DC, Arrays, dict[str, Any]], ExportedModel] = _resolve(
            self.export_ref, self.name, "export_ref"
        )
        return exporter

    def parse_configs(
        self, model_raw: Mapping[str, Any], data_raw: Mapping[str, Any]
    ) -> tuple[MC, DC]:
        """Parse and cross-check both configs; raise ConfigError naming the field and value."""
        model_config = self.parse_model_config(model_raw)
        data_config = self.parse_data_config(data_raw)
        if self.check is not None:
            self.check(model_config, data_config)
        return model_config, data_config

    def parse_model_config(self, raw: Mapping[str, Any]) -> MC:
        """Parse the model_config; a ``secure_aggregation`` this package cannot honour is
        refused first, naming why (:mod:`fedsilo.config.secure`)."""
        # Imported here: fedsilo.config builds on this module.
        from fedsilo.config.secure import check_secure_aggregation

        check_secure_aggregation(self.name, raw)
        return _parse(self.model_config_type, raw, "model_config")

    def parse_data_config(self, raw: Mapping[str, Any]) -> DC:
        return _parse(self.data_config_type, raw, "data_config")


_Parsed = TypeVar("_Parsed", bound=BaseModel)


def _resolve(ref: str, package: str, field: str) -> Any:
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"Package {package!r}: {field} must be 'module:attribute'. Got {ref!r}.")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"Package {package!r}: {field} {ref!r} cannot be imported: {exc}"
        ) from exc


def _parse(model: type[_Parsed], raw: Mapping[str, Any], what: str) -> _Parsed:
    # Strict, as JSON: a config is JSON, and JSON's types are kept -- ``true`` is no integer
    # and ``"5"`` no number (lax validation reads them as 1 and 5), while a string still
    # names a Literal or an enum. A config holding what JSON cannot (from Python) is lax.
    try:
        text = json.dumps(dict(raw), allow_nan=False)
    except (TypeError, ValueError):
        text = None
    try:
        if text is None:
            return model.model_validate(dict(raw))
        return model.model_validate_json(text, strict=True)
    except PydanticValidationError as exc:
        raise ConfigError(f"{what} is invalid: {format_validation_error(exc)}") from exc


#: package name -> module that defines ``PACKAGE: ModelPackage``
REGISTRY: dict[str, str] = {
    "arrays": "fedsilo.packages.arrays",
    "echo": "fedsilo.packages.echo",
    "eda": "fedsilo.packages.eda",
    "ffnet": "fedsilo.packages.ffnet",
    "gbm": "fedsilo.packages.gbm",
    "glm": "fedsilo.packages.glm",
    "linear_inference": "fedsilo.packages.linear_inference",
    "prl": "fedsilo.packages.prl",
    "splitnn": "fedsilo.packages.splitnn",
}


#: callables consulted in order for a name not in :data:`REGISTRY` (uploaded custom
#: packages: the server's artifact store, an approving client; see
#: :mod:`fedsilo.packages.custom.source`); each returns the package or None
PACKAGE_SOURCES: list[Callable[[str], ModelPackage[Any, Any] | None]] = []


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
        for source in list(PACKAGE_SOURCES):
            found = source(name)
            if found is not None:
                return found
        known = ", ".join(package_names())
        raise ConfigError(f"Unknown package_name {name!r}. Known packages: {known}.")
    module = importlib.import_module(module_name)
    package: ModelPackage[Any, Any] = module.PACKAGE
    return package
