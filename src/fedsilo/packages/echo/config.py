"""Configs of the ``echo`` package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fedsilo.federation import DataConfigBase


class EchoModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload_size: int = Field(default=16, ge=0, le=500_000_000, description="floats broadcast")
    accept_failures: bool = True
    min_replies: int = Field(default=1, ge=1)
    # at most a week: a longer wait overflows the event waits that enforce it
    task_timeout: float | None = Field(
        default=None, gt=0, le=7 * 86_400, allow_inf_nan=False, description="seconds per round"
    )


class EchoDataConfig(DataConfigBase):
    model_config = ConfigDict(extra="forbid")

    columns: list[str] = Field(default_factory=list, description="columns a client must have")

    def required_columns(self) -> list[str]:
        return list(self.columns)
