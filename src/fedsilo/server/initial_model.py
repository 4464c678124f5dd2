"""A session's uploaded initial model: a safetensors state dict stored beside the session.

``PUT /sessions/{sid}/initial-model`` (seed 002's ``model_file``, as a safetensors state dict
rather than a pickled module) stores the frame in the artifact store under
:func:`model_key`, with a summary (:class:`~fedsilo.wire.InitialModelPublic`: its SHA-256,
names, shapes, dtypes) under :func:`summary_key`. The bytes are parsed only with the wire
codec's safetensors decoder (:func:`fedsilo.wire.decode_frame`); nothing is unpickled.

When the session starts, the engine hands its workflow the model config of
:func:`with_initial_model`: the uploaded arrays set as ``strategy.params.initial_parameters``.
So a workflow starts from an upload exactly as from JSON ``initial_parameters``, with the same
checks against the package's model (names and shapes that do not fit fail the session at
start, naming them), and no package reads the artifact itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.config import StrategyConfig
from fedsilo.errors import ConfigError, WireError
from fedsilo.federation import ModelPackage
from fedsilo.server.state import ArtifactStore
from fedsilo.wire import (
    MAX_NAME_LENGTH,
    PRINTABLE_LINE_PATTERN,
    Arrays,
    InitialModelPublic,
    decode_frame,
)

__all__ = [
    "BOTH_GIVEN",
    "model_key",
    "parse_initial_model",
    "read_summary",
    "store_initial_model",
    "strategy_of",
    "summary_key",
    "with_initial_model",
]

_NAME = re.compile(PRINTABLE_LINE_PATTERN)

#: why a session cannot take both (the route's 409 and the engine's refusal say the same)
BOTH_GIVEN = (
    "give the initial model once: either an uploaded safetensors frame "
    "(PUT /sessions/{sid}/initial-model) or strategy.params.initial_parameters in the "
    "model_config, not both"
)


def model_key(session_id: str) -> str:
    """Artifact key of the uploaded frame (under ``sessions/<sid>``, deleted with the session)."""
    return f"sessions/{session_id}/initial_model.safetensors"


def summary_key(session_id: str) -> str:
    return f"sessions/{session_id}/initial_model.json"


def strategy_of(
    package: ModelPackage[Any, Any], model_config: Mapping[str, Any], data_config: Mapping[str, Any]
) -> StrategyConfig | None:
    """The session's parsed ``strategy`` section, or None when the package has none that
    takes ``initial_parameters`` (gbm, linear inference, splitnn, eda ...) or the session is
    an ``arrays`` driver session (``session.run``: the driver holds the strategy).

    Raises
    ------
    ConfigError
        When the configs do not parse (they did at creation, so only after a package change).
    """
    parsed, _ = package.parse_configs(model_config, data_config)
    if getattr(parsed, "driver", False) is True:
        return None  # a driver session's strategy (and initial model) live in the driver
    strategy = getattr(parsed, "strategy", None)
    return strategy if isinstance(strategy, StrategyConfig) else None


def parse_initial_model(data: bytes, max_parameters: int) -> tuple[Arrays, dict[str, Any]]:
    """The arrays of an uploaded state dict and its summary (without ``session_id``).

    Parameters
    ----------
    data : bytes
        A safetensors file, e.g. ``safetensors.torch.save_file(module.state_dict(), path)``
        or ``safetensors.numpy.save(arrays)``; any ``__metadata__`` is ignored.
    max_parameters : int
        Most numbers it may hold (the server's ``max_model_parameters``).

    Raises
    ------
    ConfigError
        When it is not safetensors, holds no tensor, a name is not one printable line of at
        most 200 characters, a dtype is not an integer or floating type, a value is not
        finite, or it holds more than ``max_parameters`` numbers; the message names each.
    """
    try:
        arrays, _ = decode_frame(data)
    except WireError as exc:
        raise ConfigError(f"initial model: {exc}; expected a safetensors state dict.") from exc
    if not arrays:
        raise ConfigError("initial model: the safetensors file holds no tensor.")
    problems: list[str] = []
    for name, array in sorted(arrays.items()):
        if len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
            problems.append(
                f"tensor name {name[:80]!r} is not one printable line of at most "
                f"{MAX_NAME_LENGTH} characters"
            )
        elif array.dtype.kind not in "iuf":
            problems.append(f"{name!r} has dtype {array.dtype}; expected integers or floats")
        elif array.dtype.kind == "f" and not np.isfinite(array).all():
            problems.append(f"{name!r} holds a value that is not finite (NaN or infinity)")
    count = sum(int(a.size) for a in arrays.values())
    if count > max_parameters:
        problems.append(
            f"it holds {count:,} numbers; this server takes at most {max_parameters:,} "
            "(max_model_parameters, FEDSILO_MAX_MODEL_PARAMETERS)"
        )
    if problems:
        raise ConfigError(f"initial model: {'; '.join(problems)}.")
    summary = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "parameters": count,
        "shapes": {name: list(a.shape) for name, a in sorted(arrays.items())},
        "dtypes": {name: str(a.dtype) for name, a in sorted(arrays.items())},
    }
    return arrays, summary


def store_initial_model(
    artifacts: ArtifactStore, session_id: str, data: bytes, summary: Mapping[str, Any]
) -> InitialModelPublic:
    """Write the frame, then its summary (a reader that finds the summary finds the frame)."""
    public = InitialModelPublic(session_id=session_id, **summary)
    artifacts.write_bytes(model_key(session_id), data)
    artifacts.write_bytes(summary_key(session_id), public.model_dump_json().encode())
    return public


def read_summary(artifacts: ArtifactStore, session_id: str) -> InitialModelPublic | None:
    raw = artifacts.read_bytes(summary_key(session_id))
    return InitialModelPublic.model_validate(json.loads(raw)) if raw is not None else None


def with_initial_model(
    artifacts: ArtifactStore,
    session_id: str,
    package: ModelPackage[Any, Any],
    model_config: Mapping[str, Any],
    data_config: Mapping[str, Any],
) -> Mapping[str, Any]:
    """The model config a workflow runs with: ``model_config`` itself when no initial model
    was uploaded, else a copy whose ``strategy.params.initial_parameters`` are the uploaded
    arrays (numpy arrays; the strategy's own validation and checks apply as to JSON lists).

    Raises
    ------
    ConfigError
        When the model config also gives ``initial_parameters``, the package takes no
        initial model, or the stored frame does not parse; the session then fails at start
        with that reason.
    """
    if read_summary(artifacts, session_id) is None:
        return model_config
    data = artifacts.read_bytes(model_key(session_id))
    if data is None:
        raise ConfigError(f"initial model of session {session_id}: its frame is missing.")
    try:
        arrays, _ = decode_frame(data)
    except WireError as exc:
        raise ConfigError(f"initial model of session {session_id}: {exc}.") from exc
    strategy = strategy_of(package, model_config, data_config)
    if strategy is None:
        raise ConfigError(
            f"initial model: the {package.name} package takes no initial model "
            "(its model_config has no strategy.params.initial_parameters)."
        )
    if strategy.params.get("initial_parameters") is not None:
        raise ConfigError(f"initial model: {BOTH_GIVEN}.")
    params = {**strategy.params, "initial_parameters": arrays}
    raw_strategy = model_config.get("strategy")
    section = dict(raw_strategy) if isinstance(raw_strategy, Mapping) else {}
    section.setdefault("name", strategy.name)
    return {**model_config, "strategy": {**section, "params": params}}
