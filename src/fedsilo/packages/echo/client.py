"""Client half of ``echo``: send the broadcast straight back."""

from __future__ import annotations

from typing import Any

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.echo.config import EchoDataConfig, EchoModelConfig
from fedsilo.wire import Arrays


class EchoExecutor:
    def __init__(
        self,
        model_config: EchoModelConfig,
        data_config: EchoDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        self.num_examples = len(dataset.train)

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        if kind != "echo":
            raise TaskError(f"echo clients handle task kind 'echo'; got {kind!r}")
        return {"num_examples": self.num_examples}, arrays
