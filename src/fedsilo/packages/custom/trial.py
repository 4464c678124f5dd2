"""The test before an upload: build the package's model and train it one local epoch.

``upload_model`` runs :func:`trial_run` in a child process (``python -m
fedsilo.packages.custom.trial``, the arguments as JSON on stdin, the result as one JSON
line on stdout), so the uploader's own code cannot disturb the SDK's process (a crash, a
hang, a changed global), and a package that fails here is never uploaded: a syntax error,
no model class or a class whose JSON is missing, a model the data does not fit, a module
that cannot train under the config's DP-SGD.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError, DataError, FedsiloError, TaskError
from fedsilo.packages.custom.config import CustomDataConfig, CustomModelConfig, unsupported_task

__all__ = ["trial_run"]


def trial_run(
    package_path: str,
    dataset_path: str,
    model_config: dict[str, Any],
    data_config: dict[str, Any],
    batch_size: int,
    task: str,
) -> dict[str, Any]:
    """Train the package one epoch on ``dataset_path`` and evaluate it there.

    Returns
    -------
    dict
        The fit reply's numbers and the evaluation metrics.

    Raises
    ------
    ConfigError, DataError, TaskError
        Naming what failed.
    """
    from fedsilo.data.dataset import LocalDataset
    from fedsilo.packages.custom.source import approved_package

    if (problem := unsupported_task(task)) is not None:
        raise ConfigError(f"task: {problem}.")
    raw = dict(model_config)
    given = raw.get("ml_task")
    given_type = given.get("type") if isinstance(given, dict) else given
    if isinstance(given_type, str) and (problem := unsupported_task(given_type)) is not None:
        raise ConfigError(f"model_config ml_task: {problem}.")
    if given_type is None:
        raw["ml_task"] = {"type": task}
    elif given_type != task:
        raise ConfigError(
            f"task is {task!r} but the model config's ml_task is {given_type!r}; make them agree."
        )
    package = approved_package("trial", "", Path(package_path))
    parsed_model: CustomModelConfig = package.parse_model_config(raw)
    parsed_data: CustomDataConfig = package.parse_data_config(data_config)
    bound = package.binding.bind(parsed_data, {"train": dataset_path}, batch_size=batch_size)
    dataset = LocalDataset(train=bound.dataset.train, test=None, batch_size=batch_size)
    executor = package.executor(parsed_model, parsed_data, dataset, None)
    _, arrays = executor.handle("init", {}, {})
    fit_meta: dict[str, Any] = {"round": 1, "local_epochs": 1, "num_rounds": 1}
    if parsed_model.differential_privacy_params is None:
        fit_meta.pop("num_rounds")
    reply, trained = executor.handle("fit", fit_meta, arrays)
    loss = reply.get("train_loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        raise TaskError(f"One epoch of training gave a train_loss of {loss}.")
    metrics = executor.handle("evaluate", {"round": 1}, trained)[0]
    return {**reply, **metrics, "parameters": int(sum(a.size for a in trained.values()))}


def main() -> int:
    """Run :func:`trial_run` on the JSON arguments of stdin; print one JSON result line."""
    arguments = json.loads(sys.stdin.read())
    try:
        result = trial_run(**arguments)
    except (ConfigError, DataError, TaskError) as exc:
        text = str(exc) if not isinstance(exc, DataError) else "; ".join(exc.problems) or str(exc)
        print(json.dumps({"ok": False, "error": text}))
        return 1
    except FedsiloError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    except Exception as exc:  # the uploader's code may raise anything
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"ok": True, "result": result}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
