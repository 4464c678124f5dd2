"""Server settings: one pydantic model, read from arguments and ``FEDSILO_*`` variables."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything the server needs; passed into :func:`fedsilo.server.app.create_app`.

    Every field can be set from the environment with the ``FEDSILO_`` prefix
    (``FEDSILO_DATA_DIR``, ``FEDSILO_DB_URL``, ``FEDSILO_ADMIN_TOKEN``, ...). ``tls_cert`` and
    ``tls_key`` (``FEDSILO_TLS_CERT``, ``FEDSILO_TLS_KEY``) come together or not at all; both
    are read when the settings are made, so a missing file or a key that does not match its
    certificate is refused before the server starts.
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
    # Ten minutes: a dead client is noticed by its silence (participant_grace), so this
    # bounds only a live client that never answers; a long local fit keeps heartbeating.
    task_timeout: float = Field(
        default=600.0,
        gt=0,
        le=7 * 86_400,
        allow_inf_nan=False,
        description="Seconds a workflow waits for a task's reply (a package's own timeout, "
        "e.g. echo's model_config.task_timeout, overrides it for its session)",
    )
    participant_grace: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds a participant may stay silent beyond its last poll's wait "
        "before it is marked offline and its outstanding tasks fail (README: Liveness)",
    )
    store_retry_timeout: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Seconds the engine retries a state store that refuses writes (disk "
        "full, read-only file) before the server exits non-zero for a supervisor to restart",
    )
    max_long_poll: float = Field(
        default=60.0, gt=0, description="Longest `wait` a client may ask of tasks/next"
    )
    # Limits (README "Operating fedsilo" / Limits): a request over one is refused (413 / 422)
    # before it costs the server more than the limit.
    max_json_body_bytes: int = Field(
        default=4 << 20,
        ge=1024,
        description="Largest JSON request body (sessions, joins, tokens, users ...), in bytes",
    )
    max_frame_body_bytes: int = Field(
        default=1 << 30,
        ge=1024,
        description="Largest frame a client may post as a task reply, in bytes",
    )
    max_model_parameters: int = Field(
        default=100_000_000,
        ge=1,
        description="Most parameters a session's model may have, computed from its "
        "model_config at creation (ffnet, glm)",
    )
    log_level: str = "warning"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Server log lines: text, or json (one object a line: time, level, logger, "
        "message, session_id where known)",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve GET /metrics without a token (a scraper on a trusted network); "
        "by default it needs a token with read_all_session",
    )
    workspace: str = Field(
        default="fedsilo",
        pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$",
        description="This server's workspace: the domain of generated user ids "
        "(<10 hex>@<workspace>) and token_info's `customer`",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate chain the server serves TLS with (together with tls_key); "
        "unset: plain HTTP, e.g. behind a TLS-terminating proxy",
    )
    tls_key: Path | None = Field(
        default=None,
        # validated even when unset, so a certificate without its key is refused
        validate_default=True,
        description="PEM private key of tls_cert (unencrypted, readable by the server only)",
    )

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read the file ({exc.strerror})") from None
        return path

    @field_validator("tls_key")
    @classmethod
    def _key_matches_cert(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert" not in info.data:
            return key  # tls_cert itself was refused; its error says why
        cert = info.data["tls_cert"]
        if (cert is None) != (key is None):
            given, missing = ("tls_cert", "tls_key") if key is None else ("tls_key", "tls_cert")
            raise ValueError(
                f"{given} is set but {missing} is not; TLS needs both the certificate "
                "(--tls-cert / FEDSILO_TLS_CERT) and its key (--tls-key / FEDSILO_TLS_KEY)"
            )
        if cert is not None and key is not None:
            # Loaded once here so a bad pair is refused before the server starts, not by a
            # traceback from uvicorn. No password: an encrypted key fails instead of prompting.
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(cert, key, password=lambda: b"")
            except ssl.SSLError as exc:
                raise ValueError(
                    f"tls_cert and tls_key are not a PEM certificate and its unencrypted "
                    f"private key ({exc.reason or exc})"
                ) from None
        return key

    @property
    def tls(self) -> bool:
        """Whether the server serves TLS itself (``https://``)."""
        return self.tls_cert is not None

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.resolved_data_dir() / 'fedsilo.db'}"

    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str(self.resolved_data_dir() / "artifacts")
