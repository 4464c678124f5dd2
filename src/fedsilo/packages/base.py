"""The contract every model package fulfils, and the context its workflow talks through.

A package is one folder under ``packages/`` with both halves of one family of models:

* ``config.py`` -- pydantic models for its ``model_config`` and ``data_config``;
* ``server.py`` -- ``run(ctx, model_config, data_config)``, the workflow the engine runs in its
  own worker. It sees clients only through :class:`SessionContext`: no sockets, no SQL;
* ``client.py`` -- an :class:`Executor`: ``handle(kind, meta, arrays) -> (meta, arrays)``, pure
  computation on local data, so it unit-tests without a server;
* ``export.py`` -- turns the saved model into user objects (:class:`ExportedModel`).

The package is described by one :class:`ModelPackage` value and registered by name in
``fedsilo.packages`` (see ``REGISTRY`` there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from fedsilo.errors import ConfigError
from fedsilo.wire import Arrays, DatasetSummary, SessionKind, format_validation_error

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from fedsilo.data.dataset import LocalDataset

__all__ = [
    "Checkpoint",
    "DataConfigBase",
    "Executor",
    "ExportedModel",
    "ModelPackage",
    "Participant",
    "Reply",
    "SessionContext",
    "SessionInfo",
]


@dataclass(frozen=True)
class SessionInfo:
    """What a workflow knows about its session."""

    id: str
    name: str
    package_name: str
    min_num_clients: int
    num_rounds: int
    model_config: dict[str, Any]
    data_config: dict[str, Any]


@dataclass(frozen=True)
class Participant:
    """A client that joined the session."""

    id: str
    client_name: str
    dataset: DatasetSummary


@dataclass(frozen=True)
class Reply:
    """One participant's answer to a task."""

    participant: Participant
    meta: dict[str, Any]
    arrays: Arrays


@dataclass(frozen=True)
class Checkpoint:
    """The state a workflow saved after a round; ``restore`` hands it back after a restart."""

    round: int
    arrays: Arrays
    meta: dict[str, Any] = field(default_factory=dict)


class SessionContext(Protocol):
    """Everything a server-side workflow may do. Implemented by the engine."""

    @property
    def session(self) -> SessionInfo: ...

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        """Block until ``n`` participants joined; return them (in join order)."""
        ...

    def ask(
        self,
        participants: Sequence[Participant],
        kind: str,
        arrays: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        round: int = 0,
        timeout: float | None = None,
        accept_failures: bool = True,
        min_replies: int | None = None,
    ) -> list[Reply]:
        """Queue one task per participant, wait for their replies, apply the failure policy.

        A participant whose task fails (error reply, malformed reply, timeout) is left out of
        the result when ``accept_failures`` holds and at least ``min_replies`` (default 1)
        replies came back; otherwise :class:`fedsilo.errors.TaskError` is raised and the
        engine fails the session with that reason.
        """
        ...

    def record_round(
        self,
        rnd: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
    ) -> None:
        """Persist one round's federated metrics and per-client metrics (keyed by client name)."""
        ...

    def checkpoint(self, rnd: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Persist the workflow state after round ``rnd`` (atomically); advances session.round."""
        ...

    def restore(self) -> Checkpoint | None:
        """The last checkpoint, or None on a fresh start."""
        ...

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], rnd: int) -> None:
        """Persist the session's model (the one ``GET /model`` serves)."""
        ...

    def log(self, message: str) -> None:
        """Record a line in the session's log."""
        ...


class Executor(Protocol):
    """The client half of a package: one handler per task kind, no networking."""

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]: ...


class ExportedModel(Protocol):
    """A trained model as the SDK hands it to users."""

    def as_pytorch(self) -> torch.nn.Module: ...

    def predict(self, data: pd.DataFrame) -> Any: ...


class DataConfigBase(BaseModel):
    """Base of every package's data_config: it knows which columns it reads."""

    def required_columns(self) -> list[str]:
        raise NotImplementedError


MC = TypeVar("MC", bound=BaseModel)
DC = TypeVar("DC", bound=DataConfigBase)


@dataclass(frozen=True)
class ModelPackage(Generic[MC, DC]):
    """One registered package: its configs and its two halves plus export."""

    name: str
    description: str
    kind: SessionKind
    model_config_type: type[MC]
    data_config_type: type[DC]
    workflow: Callable[[SessionContext, MC, DC], None]
    executor: Callable[[MC, DC, LocalDataset], Executor]
    export: Callable[[MC, DC, Arrays, dict[str, Any]], ExportedModel]
    #: cross-checks between the two configs (e.g. input_size vs predictors); raises ConfigError
    check: Callable[[MC, DC], None] | None = None

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
        return _parse(self.model_config_type, raw, "model_config")

    def parse_data_config(self, raw: Mapping[str, Any]) -> DC:
        return _parse(self.data_config_type, raw, "data_config")


_Parsed = TypeVar("_Parsed", bound=BaseModel)


def _parse(model: type[_Parsed], raw: Mapping[str, Any], what: str) -> _Parsed:
    try:
        return model.model_validate(dict(raw))
    except PydanticValidationError as exc:
        raise ConfigError(f"{what} is invalid: {format_validation_error(exc)}") from exc
