"""Export of splitnn: the server holds no part of a split network, so there is no model to
hand out -- only the record of what was trained (or predicted) and where the parts are."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsilo.errors import FedsiloError
from fedsilo.packages.splitnn.config import SplitnnDataConfig, SplitnnModelConfig
from fedsilo.wire import Arrays

__all__ = ["SplitnnRecord"]

_NO_MODEL = (
    "A VFL session's network is split between its parties and never reaches the server: "
    "each party keeps its part at its --storage-path. Predict with a VFL prediction session "
    "(create_vfl_session(..., vfl_mode='predict', training_session_id=...))."
)


class SplitnnRecord:
    """The saved record of a VFL session, in the shape ``Session.model()`` hands out.

    Attributes
    ----------
    meta : dict
        ``artifact`` (``splitnn_training`` or ``splitnn_predictions``), the PRL session,
        the label client, the clients, the rounds or the number of predictions.
    """

    def __init__(
        self, mc: SplitnnModelConfig, dc: SplitnnDataConfig, arrays: Arrays, meta: dict[str, Any]
    ) -> None:
        self.meta = dict(meta)

    def as_pytorch(self) -> Any:
        raise FedsiloError(_NO_MODEL)

    def predict(self, data: pd.DataFrame) -> Any:
        raise FedsiloError(_NO_MODEL)
