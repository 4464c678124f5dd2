"""Importing a custom package folder: its model class, default inputs and dataset class.

This is the only place uploaded code is imported, and only on a client (or in the uploader's
trial run), never in the server. The folder must hold:

* ``model.py`` -- exactly one ``torch.nn.Module`` subclass defined there (imported classes do
  not count), the model;
* ``<classname>.json`` -- the model class's default keyword arguments, named after the class
  in lowercase (``digitscnn.json`` for ``class DigitsCNN``);
* optionally ``dataset.py`` -- one ``torch.utils.data.Dataset`` subclass, built as
  ``Dataset(path, **params)`` (params from ``<datasetclassname>.json`` under the session's
  data_config) whose items are ``(input_tensor, target)`` pairs.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from fedsilo.errors import ConfigError

__all__ = ["LoadedPackage", "load_package"]


@dataclass(frozen=True)
class LoadedPackage:
    """A custom package folder, imported."""

    folder: Path
    model_class: type[nn.Module]
    model_defaults: dict[str, Any]
    dataset_class: type[Dataset[Any]] | None = None
    dataset_defaults: dict[str, Any] = field(default_factory=dict)

    def build_model(self, params: dict[str, Any]) -> nn.Module:
        """A new model from the defaults under ``params``; ConfigError when it fails."""
        arguments = {**self.model_defaults, **params}
        try:
            return self.model_class(**arguments)
        except Exception as exc:
            raise ConfigError(
                f"model.py: {self.model_class.__name__}(**{arguments!r}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def build_dataset(self, path: str, params: dict[str, Any]) -> Dataset[Any]:
        assert self.dataset_class is not None
        arguments = {**self.dataset_defaults, **params}
        try:
            dataset: Dataset[Any] = self.dataset_class(path, **arguments)  # type: ignore[call-arg]
            return dataset
        except Exception as exc:
            raise ConfigError(
                f"dataset.py: {self.dataset_class.__name__}({path!r}, **{arguments!r}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def load_package(folder: Path) -> LoadedPackage:
    """Import the package in ``folder`` (see the module docstring).

    Raises
    ------
    ConfigError
        Naming the file and the problem: a missing model.py, a syntax or import error (with
        its line), no or several model classes, no JSON named after the class, JSON that
        is not an object.
    """
    model_module = _import(folder / "model.py", required=True)
    assert model_module is not None
    model_class = _one_class(model_module, nn.Module, "model.py", "torch.nn.Module")
    defaults = _class_json(folder, model_class, "model.py")
    dataset_module = _import(folder / "dataset.py", required=False)
    if dataset_module is None:
        return LoadedPackage(folder, model_class, defaults)
    dataset_class = _one_class(dataset_module, Dataset, "dataset.py", "torch.utils.data.Dataset")
    dataset_defaults = _class_json(folder, dataset_class, "dataset.py", required=False)
    return LoadedPackage(folder, model_class, defaults, dataset_class, dataset_defaults)


def _import(path: Path, *, required: bool) -> ModuleType | None:
    if not path.is_file():
        if required:
            raise ConfigError(f"The package folder {str(path.parent)!r} has no {path.name}.")
        return None
    name = f"fedsilo_custom_{uuid.uuid4().hex}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ConfigError(
            f"{path.name} line {exc.lineno}: SyntaxError: {exc.msg} ({(exc.text or '').strip()!r})"
        ) from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        line = traceback.extract_tb(exc.__traceback__)[-1].lineno
        raise ConfigError(
            f"{path.name} line {line}: importing it failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _one_class(module: ModuleType, base: type, file: str, base_name: str) -> Any:
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, base)
        and value is not base
        and value.__module__ == module.__name__
    ]
    if len(classes) != 1:
        found = ", ".join(sorted(c.__name__ for c in classes)) or "none"
        raise ConfigError(
            f"{file} must define exactly one {base_name} subclass; it defines {found}."
        )
    return classes[0]


def _class_json(folder: Path, cls: type, file: str, *, required: bool = True) -> dict[str, Any]:
    path = folder / f"{cls.__name__.lower()}.json"
    if not path.is_file():
        if not required:
            return {}
        present = ", ".join(sorted(p.name for p in folder.glob("*.json"))) or "none"
        raise ConfigError(
            f"{file} defines the class {cls.__name__}, so the package must hold "
            f"{path.name} (its default inputs, named after the class in lowercase); JSON "
            f"files present: {present}."
        )
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{path.name} must hold a JSON object. Got {type(value).__name__}.")
    return value
