"""Export of eda: an EDA session's saved artifact is its results, not a model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsilo.analytics.results import EdaResults
from fedsilo.errors import FedsiloError
from fedsilo.packages.eda.config import EdaDataConfig, EdaModelConfig
from fedsilo.wire import Arrays

__all__ = ["EdaExport"]

_NOT_A_MODEL = "An EDA session computes statistics, not a model: read them with session.results()."


class EdaExport:
    """The saved results of an EDA session, in the shape ``Session.model()`` hands out.

    Attributes
    ----------
    results : EdaResults
    """

    def __init__(
        self, mc: EdaModelConfig, dc: EdaDataConfig, arrays: Arrays, meta: dict[str, Any]
    ) -> None:
        self.results = EdaResults.from_payload(meta, arrays)

    def as_pytorch(self) -> Any:
        raise FedsiloError(_NOT_A_MODEL)

    def predict(self, data: pd.DataFrame) -> Any:
        raise FedsiloError(_NOT_A_MODEL)
