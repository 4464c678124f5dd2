"""Export of prl: a PRL session's artifact is its alignment, not a model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsilo.errors import FedsiloError
from fedsilo.packages.prl.config import PrlDataConfig, PrlModelConfig
from fedsilo.vfl.alignment import Alignment
from fedsilo.wire import Arrays

__all__ = ["PrlExport"]

_NOT_A_MODEL = (
    "A PRL session links records, it trains no model: its overlap statistics are "
    "session.metrics().as_dict(), and VFL sessions use its alignment by prl_session_id."
)


class PrlExport:
    """The saved alignment of a PRL session, in the shape ``Session.model()`` hands out.

    Attributes
    ----------
    alignment : Alignment
    """

    def __init__(
        self, mc: PrlModelConfig, dc: PrlDataConfig, arrays: Arrays, meta: dict[str, Any]
    ) -> None:
        self.alignment = Alignment.from_payload(meta, arrays)

    def as_pytorch(self) -> Any:
        raise FedsiloError(_NOT_A_MODEL)

    def predict(self, data: pd.DataFrame) -> Any:
        raise FedsiloError(_NOT_A_MODEL)
