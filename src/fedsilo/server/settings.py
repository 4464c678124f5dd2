"""Server settings: one pydantic model, read from arguments and ``FEDSILO_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything the server needs; passed into :func:`fedsilo.server.app.create_app`.

    Every field can be set from the environment with the ``FEDSILO_`` prefix
    (``FEDSILO_DATA_DIR``, ``FEDSILO_DB_URL``, ``FEDSILO_ADMIN_TOKEN``, ...).
    """

    model_config = SettingsConfigDict(env_prefix="FEDSILO_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".fedsilo")
    db_url: str | None = Field(
        default=None,
        description="State store: a SQLAlchemy URL (default sqlite:///<data_dir>/fedsilo.db; "
        "postgresql+psycopg://...) or memory:// (nothing persisted)",
    )
    artifacts_url: str | None = Field(
        default=None, description="fsspec URL of the artifact store; default <data_dir>/artifacts"
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bootstrap admin token; generated on first start when unset"
    )
    task_timeout: float = Field(
        default=3600.0, gt=0, description="Seconds a workflow waits for a task's reply"
    )
    max_long_poll: float = Field(
        default=60.0, gt=0, description="Longest `wait` a client may ask of tasks/next"
    )
    log_level: str = "warning"

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.resolved_data_dir() / 'fedsilo.db'}"

    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str(self.resolved_data_dir() / "artifacts")
