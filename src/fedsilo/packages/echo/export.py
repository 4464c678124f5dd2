"""Export of ``echo``: the final broadcast vector."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsilo.errors import FedsiloError
from fedsilo.packages.echo.config import EchoDataConfig, EchoModelConfig
from fedsilo.wire import Arrays


class EchoModel:
    def __init__(
        self, mc: EchoModelConfig, dc: EchoDataConfig, arrays: Arrays, meta: dict[str, Any]
    ) -> None:
        self.arrays = arrays
        self.meta = meta

    def as_pytorch(self) -> Any:
        raise FedsiloError("the echo package trains no model; it has no PyTorch form")

    def predict(self, data: pd.DataFrame) -> Any:
        raise FedsiloError("the echo package trains no model; it cannot predict")
