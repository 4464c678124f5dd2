"""What travels between the SDK, the server and the clients.

Two kinds of payload cross the wire:

* **Control data** is JSON, validated on both ends by the pydantic models below.
* **Arrays** travel as ``application/octet-stream`` frames in the safetensors format: an
  8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte
  range, then the raw little-endian buffers. Nothing is ever pickled. A frame's header carries
  one extra JSON document under ``__metadata__["fedsilo"]`` (a task envelope, a reply
  envelope, or model metadata) so one request moves both the control data and the arrays.

REST surface (all under ``/api/v1`` and behind ``Authorization: Bearer <token>``)::

    POST   /sessions                                   SessionCreate -> 201 SessionPublic
    GET    /sessions                                   -> list[SessionPublic]
    GET    /sessions/{sid}                             -> SessionPublic
    POST   /sessions/{sid}/start                       -> SessionPublic
    POST   /sessions/{sid}/cancel                      -> SessionPublic
    DELETE /sessions/{sid}                             -> 204 (not while pending/running)
    GET    /sessions/{sid}/metrics                     -> SessionMetricsPublic
    GET    /sessions/{sid}/model                       -> frame(model arrays, ModelMeta)
    GET    /sessions/{sid}/logs                        -> list[SessionLogLine]
    PUT    /sessions/{sid}/initial-model               frame(state dict) -> InitialModelPublic
    GET    /sessions/{sid}/participants                -> list[ParticipantPublic]
    POST   /sessions/{sid}/participants                ParticipantJoin -> 201 ParticipantJoined
    GET    /sessions/{sid}/participants/{pid}/tasks/next?wait=S
                                                       -> 200 frame(arrays, TaskPayload)
                                                          204 no task within S seconds
                                                          410 SessionEnded (session is over)
    POST   /sessions/{sid}/participants/{pid}/tasks/{tid}/reply[?wait=S]
                                                       frame(arrays, ReplyEnvelope)
                                                       -> 200 ReplyAck            (no wait)
                                                       -> as tasks/next           (wait=S)
    POST   /sessions/{sid}/participants/{pid}/relay/{to}   bytes -> 204 (fast exchange)
    GET    /sessions/{sid}/participants/{pid}/relay?wait=S -> 200 bytes / 204 / 410
    GET    /packages                                   -> list[PackagePublic]
    POST   /tokens                                     TokenCreate -> 201 TokenCreated
    GET    /tokens                                     -> list[TokenPublic]
    DELETE /tokens/{token_id}                          -> TokenPublic (revoked)

Participant calls (``tasks/next``, ``reply``, ``relay``) also carry the participant credential
that the first join returned, in the :data:`PARTICIPANT_HEADER` header; without it (or with
another participant's) they answer 403. A join under a ``client_name`` that already joined
must carry that participant's credential too (a restarted client keeps it in its state dir).

A task frame's header is a :class:`TaskPayload` (kind, round, meta, sealed_from): the same
bytes for every recipient of a broadcast, so it is encoded and held once. The task id travels
in the :data:`TASK_ID_HEADER` response header. A sealed payload is the frame array
``fedsilo.sealed`` (uint8 ciphertext), in tasks and replies alike; the server relays it unread.
A relayed fast-exchange message names its sender in :data:`SENDER_HEADER` and its tag in
:data:`TAG_HEADER`.

``GET /healthz`` (no prefix, no auth) answers ``{"status": "ok", "version": ...}``.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import safetensors.numpy
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from fedsilo.errors import WireError

API_PREFIX = "/api/v1"
OCTET_STREAM = "application/octet-stream"
SESSION_ID_PATTERN = re.compile(r"^[0-9a-f]{10}$")
CLIENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
#: request header of every participant call: the credential the first join returned
PARTICIPANT_HEADER = "X-Fedsilo-Participant-Credential"
#: response header of a task frame: the task's id, to reply to
TASK_ID_HEADER = "X-Fedsilo-Task-Id"
#: response header of a task frame: seconds between the heartbeats
#: (``POST .../participants/{pid}/heartbeat``) the client sends while it works on the task;
#: a client silent past the server's grace period is marked offline
HEARTBEAT_HEADER = "X-Fedsilo-Heartbeat"
#: response headers of a relayed fast-exchange message: its sender's participant id, its tag
SENDER_HEADER = "X-Fedsilo-Sender"
TAG_HEADER = "X-Fedsilo-Tag"
#: an X25519 public key: 32 bytes, url-safe base64 without padding (43 characters)
PUBLIC_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")

Arrays = dict[str, np.ndarray]

# ------------------------------------------------------------------- input bounds
# What a request may carry, whatever the route: the JSON models below refuse more at once
# (422 naming the field and the limit) rather than fail later in the engine.

#: one printable line: no control characters (no NUL, newline, tab, escape ...)
PRINTABLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
#: free text (a description): lines, tabs allowed; no NUL nor other control characters
PRINTABLE_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
#: the largest row count a join summary may declare: 2^53, the last integer a float64 (and
#: so a JSON number in most parsers) holds exactly
MAX_ROWS = 2**53
#: the most columns a join summary may declare
MAX_COLUMNS = 10_000
#: the longest a name (session, user, token, column) may be
MAX_NAME_LENGTH = 200


def _not_bool_or_text(value: Any) -> Any:
    # JSON Schema's integer: a number without a fraction (1.0 is one), never a boolean
    # (pydantic would read true as 1) nor a string (it would read "5" as 5).
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"must be a JSON integer, not a {type(value).__name__}")
    return value


#: an integer as JSON Schema means it: ``true`` and ``"5"`` are refused, ``5.0`` is 5
StrictInt = Annotated[int, BeforeValidator(_not_bool_or_text)]
#: a float that is a finite number (an int is accepted; ``true``, NaN and Infinity are not)
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: the longest task timeout a session may set: a week (a longer wait overflows the event
#: waits that enforce it)
MAX_TASK_TIMEOUT_S = 7 * 86_400
#: a name: one printable line of at most :data:`MAX_NAME_LENGTH` characters
Name = Annotated[
    str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=PRINTABLE_LINE_PATTERN)
]

_META_KEY = "fedsilo"
_M = TypeVar("_M", bound=BaseModel)


# --------------------------------------------------------------------------- codec


def encode_frame(arrays: Mapping[str, np.ndarray] | None = None, header: Any = None) -> bytes:
    """Encode named arrays and one JSON-able header into a safetensors frame.

    Parameters
    ----------
    arrays : mapping of str to ndarray, optional
        Arrays to send; they are written little-endian and C-contiguous.
    header : JSON-able or pydantic model, optional
        Control data carried in the frame's metadata.

    Returns
    -------
    bytes
    """
    if isinstance(header, BaseModel):
        header_json = header.model_dump_json()
    else:
        header_json = json.dumps(header if header is not None else {})
    prepared: dict[str, np.ndarray] = {}
    for name, value in (arrays or {}).items():
        array = np.asarray(value)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        # np.ascontiguousarray would promote a 0-d array to shape (1,)
        prepared[name] = np.require(array, requirements="C")
    data: bytes = safetensors.numpy.save(prepared, metadata={_META_KEY: header_json})
    return data


def decode_frame(data: bytes) -> tuple[Arrays, Any]:
    """Decode a frame made by :func:`encode_frame`.

    Returns
    -------
    arrays : dict of str to ndarray
    header : the JSON document from the frame's metadata (``{}`` when absent)

    Raises
    ------
    WireError
        When the bytes are not a valid safetensors frame or the header is not JSON.
    """
    if len(data) < 8:
        raise WireError(f"frame is {len(data)} bytes; expected at least the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise WireError(f"frame header claims {header_len} bytes but only {len(data) - 8} follow")
    try:
        raw_header = json.loads(data[8 : 8 + header_len])
        arrays: Arrays = safetensors.numpy.load(bytes(data))
    except Exception as exc:  # safetensors raises its own untyped error
        raise WireError(f"frame is not valid safetensors: {exc}") from exc
    metadata = raw_header.get("__metadata__") or {}
    try:
        header = json.loads(metadata.get(_META_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise WireError(f"frame metadata is not JSON: {exc}") from exc
    return arrays, header


def parse_header(model: type[_M], header: Any, what: str) -> _M:
    """Validate a frame header against ``model``; raise :class:`WireError` naming the field."""
    try:
        return model.model_validate(header)
    except ValidationError as exc:
        raise WireError(f"{what} is malformed: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message (got value)``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        given = err.get("input")
        shown = json.dumps(given, default=str) if given is not None else "null"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        parts.append(f"{loc}: {err['msg']} (got {shown})")
    return "; ".join(parts)


# ------------------------------------------------------------------ session schemas


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer's body: one stable sentence (a 422 lists each problem as
    ``field: message (got value)``, separated by ``; ``)."""

    detail: str


class SessionStatus(StrEnum):
    created = "created"
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"

    @property
    def ended(self) -> bool:
        return self in (SessionStatus.completed, SessionStatus.failed, SessionStatus.canceled)


class SessionKind(StrEnum):
    hfl = "hfl"
    eda = "eda"
    prl = "prl"
    vfl = "vfl"


def non_finite_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinite float inside ``value`` (a parsed JSON
    document), or None. Python's JSON reader accepts ``NaN`` and ``Infinity``; a config
    carrying one would fail later, far from its cause."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "<root>")
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Body(_Strict):
    """A REST request body: unknown keys refused, every float finite (free-form parts too).

    Frame headers (:class:`TaskPayload`, :class:`ReplyEnvelope`) are not bodies: what a reply
    may carry is checked against its task (:mod:`fedsilo.federation.expect`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        found = non_finite_path(data)
        if found is not None:
            raise ValueError(f"{found} must be a finite number (NaN and Infinity are refused)")
        return data


class SessionCreate(_Body):
    """Body of ``POST /sessions``."""

    name: Name
    description: str = Field(default="", max_length=4000, pattern=PRINTABLE_TEXT_PATTERN)
    kind: SessionKind = SessionKind.hfl
    package_name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    min_num_clients: StrictInt = Field(ge=1, le=10_000)
    num_rounds: StrictInt = Field(ge=1, le=100_000)
    model_config_: dict[str, Any] = Field(alias="model_config")
    data_config: dict[str, Any]
    task_timeout: FiniteFloat | None = Field(
        default=None,
        gt=0,
        le=MAX_TASK_TIMEOUT_S,
        description="Seconds this session's workflow waits for one reply (a participant "
        "that goes silent fails its task sooner, see README 'Liveness'); default: the "
        "server's task_timeout (FEDSILO_TASK_TIMEOUT, 600 s)",
    )

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, populate_by_name=True, protected_namespaces=()
    )


class SessionPublic(BaseModel):
    id: str
    name: str
    description: str
    kind: SessionKind
    package_name: str
    min_num_clients: int
    num_rounds: int
    model_config_: dict[str, Any] = Field(alias="model_config")
    data_config: dict[str, Any]
    status: SessionStatus
    round: int
    failure_reason: str | None = None
    task_timeout: float | None = Field(
        default=None, description="The session's own task timeout (seconds), if it set one."
    )
    created_by: str | None = Field(default=None, description="The owner's user name.")
    owner_id: str | None = Field(default=None, description="The owner's user id.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, protected_namespaces=()
    )


class SessionEnded(BaseModel):
    """410 body of a long-poll on a session that is over."""

    detail: str
    status: SessionStatus
    reason: str | None = None


class SessionLogLine(BaseModel):
    """One line of ``GET /sessions/{sid}/logs``: what the engine did, in order."""

    time: datetime
    message: str


class SessionMetricsPublic(BaseModel):
    """The seed documentation's metrics shape."""

    session_id: str
    federated_metrics: list[dict[str, float]]
    client_metrics: list[dict[str, dict[str, float]]]
    latest_global_model_federated_loss: float | None


# -------------------------------------------------------------- participant schemas


class ColumnSummary(_Body):
    name: Name
    dtype: str = Field(min_length=1, max_length=64, pattern=PRINTABLE_LINE_PATTERN)


class DatasetSummary(_Body):
    """What a client tells the server about its data: shapes and types, never values.

    At most :data:`MAX_ROWS` rows per table and :data:`MAX_COLUMNS` columns."""

    train_rows: StrictInt = Field(ge=0, le=MAX_ROWS)
    test_rows: StrictInt = Field(ge=0, le=MAX_ROWS)
    columns: list[ColumnSummary] = Field(max_length=MAX_COLUMNS)


class ParticipantJoin(_Body):
    """Body of ``POST /sessions/{sid}/participants``."""

    client_name: str = Field(pattern=CLIENT_NAME_PATTERN.pattern)
    dataset: DatasetSummary
    public_key: str = Field(
        pattern=PUBLIC_KEY_PATTERN.pattern,
        description="X25519 public key, url-safe base64 without padding; peers seal to it",
    )


#: longest reason a refusal carries (one line: what the data owner would fix, never data)
REFUSAL_REASON_MAX = 1000
#: one printable line: no control characters (no newline, tab, escape ...)
REFUSAL_REASON_PATTERN = re.compile(PRINTABLE_LINE_PATTERN)


class ParticipantRefusal(_Body):
    """Body of ``POST /sessions/{sid}/refusals``: a client declined to join, and why.

    Sent by a client whose data or policy refuses the session before it joins, so the
    session's log and status reason say so instead of waiting without a word. The reason
    names columns, counts and rules, never values.
    """

    client_name: str = Field(pattern=CLIENT_NAME_PATTERN.pattern)
    reason: str = Field(
        min_length=1, max_length=REFUSAL_REASON_MAX, pattern=REFUSAL_REASON_PATTERN.pattern
    )


class RefusalRecorded(BaseModel):
    """Answer of ``POST /sessions/{sid}/refusals``: the log line the session got."""

    session_id: str
    client_name: str
    message: str
    time: datetime


class ParticipantPublic(BaseModel):
    id: str
    session_id: str
    client_name: str
    dataset: DatasetSummary
    public_key: str = ""
    joined_at: datetime
    last_seen_at: datetime | None = None
    offline_at: datetime | None = Field(
        default=None,
        description="When it went silent past the server's grace period (its tasks then "
        "fail at once); null while it is live (README 'Liveness')",
    )
    rejoined: bool = False


class ParticipantJoined(ParticipantPublic):
    """Answer to a join: the participant, and on the first join its credential."""

    credential: str | None = Field(
        default=None,
        description="Shown once, on the first join; stored only as a hash. Every participant "
        "call presents it in the X-Fedsilo-Participant-Credential header.",
    )


# --------------------------------------------------------------------- task frames


class TaskPayload(_Strict):
    """Header of a task frame: what the task asks. Shared by every recipient of a broadcast;
    the task id comes in the ``X-Fedsilo-Task-Id`` response header."""

    kind: str
    round: int = 0
    meta: dict[str, Any] = Field(default_factory=dict)
    #: participant id of the sender of the sealed payload the frame carries, if any
    sealed_from: str | None = None


class TaskEnvelope(_Strict):
    """A task as the client runtime handles it: the payload header plus its id."""

    id: str
    session_id: str
    kind: str
    round: int = 0
    meta: dict[str, Any] = Field(default_factory=dict)
    sealed_from: str | None = None


class ReplyEnvelope(_Strict):
    """Header of the frame a client posts to ``tasks/{tid}/reply``."""

    status: Literal["ok", "error"] = "ok"
    meta: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class ReplyAck(BaseModel):
    task_id: str
    accepted: bool


# ------------------------------------------------------------------ model, packages


class ModelMeta(BaseModel):
    """Header of the model frame from ``GET /sessions/{sid}/model``."""

    session_id: str
    package_name: str
    round: int
    model_config_: dict[str, Any] = Field(alias="model_config")
    data_config: dict[str, Any]
    meta: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, protected_namespaces=()
    )


class InitialModelPublic(BaseModel):
    """``PUT /sessions/{sid}/initial-model``: the uploaded initial model as the server
    stored it. ``sha256`` is the digest of the uploaded bytes (also in the audit entry)."""

    session_id: str
    sha256: str
    size: int = Field(description="bytes of the safetensors frame")
    parameters: int = Field(description="numbers it holds, over all tensors")
    shapes: dict[str, list[int]]
    dtypes: dict[str, str]


class PackagePublic(BaseModel):
    """A package this server runs. An uploaded custom package (``POST /packages``) also
    carries its archive's ``digest`` (SHA-256, what a client approves), ``size`` in bytes,
    ``task``, ``uploaded_by`` (user name) and ``created_at``; a built-in one has them null."""

    name: str
    description: str
    kind: SessionKind
    custom: bool = False
    digest: str | None = None
    size: int | None = None
    task: str | None = None
    uploaded_by: str | None = None
    created_at: datetime | None = None


# -------------------------------------------------------------------------- tokens


class TokenCreate(_Body):
    """Body of ``POST /tokens`` (admin). ``user_id`` is the user's name (the seed's spelling)
    or generated id; the caller's own user when omitted. No scopes given means the least
    privilege (``read_user_session``), never ``admin``."""

    user_id: Name | None = None
    name: Name | None = Field(default=None, description="A label, e.g. 'silo-a'.")
    scopes: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: ["read_user_session"], max_length=16
    )
    expires_in_days: FiniteFloat | None = Field(
        default=30,
        gt=0,
        description="At most 30 for a scoped token; an admin-only token may be longer "
        "(at most 3650) or null (never expires).",
    )


class TokenPublic(BaseModel):
    id: str
    name: str
    scopes: list[str]
    user_id: str | None = Field(default=None, description="The owning user's generated id.")
    user_name: str | None = None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret; shown once, stored only as a hash.")


class TokenInfoRequest(_Body):
    """Body of ``POST /tokens/info``: the secret of the token to inspect (the caller's own,
    or any when the caller is admin)."""

    token: str = Field(min_length=1, max_length=512)


class TokenInfo(BaseModel):
    """The seed's ``token_info`` shape: ``scope`` is space-separated, times are epoch
    seconds, ``user_id`` is the user's name and ``email`` its generated id."""

    customer: str
    email: str
    realm: str = "fedsilo"
    role: str = Field(description="'admin' for a token holding admin, else 'user'.")
    env: str
    token_id: str
    iss: str = "fedsilo"
    iat: int
    expires: int | None
    renewable: bool = False
    scope: str
    user_id: str
    user_type: str
    active: bool


# --------------------------------------------------------------------------- users


class UserCreate(_Body):
    """Body of ``POST /users`` (admin)."""

    name: Name
    user_type: str = Field(default="generated", pattern="^(human|generated)$")


class UserPublic(BaseModel):
    id: str
    name: str
    user_type: str
    active: bool
    created_by: str | None
    created_at: datetime


# --------------------------------------------------------------------------- audit


class AuditEntry(BaseModel):
    seq: int
    at: datetime
    action: str
    target: str
    outcome: str
    user_id: str | None
    token_id: str | None
    address: str | None
    detail: str | None
