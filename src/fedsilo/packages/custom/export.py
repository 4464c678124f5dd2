"""The trained model of a custom-package session: its arrays, for the package's own class.

fedsilo never imports uploaded code outside an approving client, so the export holds the
arrays (``session.model().arrays()``) and tells how to load them.
"""

from __future__ import annotations

from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.wire import Arrays

__all__ = ["CustomModel"]


class CustomModel:
    """The trained ``state_dict`` of a custom package's model."""

    def __init__(self, model_config: Any, data_config: Any, arrays: Arrays, meta: dict[str, Any]):
        self.arrays, self.meta = dict(arrays), dict(meta)

    def as_pytorch(self) -> Any:
        raise ConfigError(
            "A custom package's model is exported as its state_dict: build your model.py "
            "class and call load_state_dict({k: torch.from_numpy(v) for k, v in "
            "session.model().arrays().items()})."
        )

    def predict(self, data: Any) -> Any:
        return self.as_pytorch()
