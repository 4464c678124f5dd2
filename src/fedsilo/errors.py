"""The exceptions fedsilo raises, all under one base.

Hierarchy::

    FedsiloError
    ├── ConfigError            a model_config / data_config / setting is invalid
    ├── DataError              a local dataset does not satisfy the data_config (.problems)
    ├── WireError              bytes on the wire are not a valid fedsilo frame
    │   └── SealError             a sealed payload does not open (wrong key, tampered)
    ├── TaskError              a task could not be executed on a client
    ├── APIError               the server answered with an error (.status_code, .detail)
    │   ├── AuthenticationError   401: missing, invalid, revoked or expired token
    │   ├── PermissionDenied      403: the credential may not act on this resource
    │   ├── NotFoundError         404: no such session / participant / token / model
    │   ├── ConflictError         409: the resource is in a state that forbids the call
    │   └── ValidationError       422: the request body failed validation
    ├── ServerUnavailable      the server could not be reached
    └── SessionError           a session ended without completing (.status, .reason)
        └── WaitTimeout        waiting for a session exceeded the caller's timeout

Every message says what was wrong, what was expected and what was given, so a user knows
what to fix without reading a traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "FedsiloError",
    "NotFoundError",
    "PermissionDenied",
    "SealError",
    "ServerUnavailable",
    "SessionError",
    "TaskError",
    "ValidationError",
    "WaitTimeout",
    "WireError",
]


class FedsiloError(Exception):
    """Base class of every error fedsilo raises on purpose."""


class ConfigError(FedsiloError, ValueError):
    """A configuration (model_config, data_config, server setting) is invalid."""


class DataError(FedsiloError, ValueError):
    """A dataset does not satisfy the session's data_config.

    Parameters
    ----------
    problems : list of str
        Every problem found, so the data owner can fix them all in one pass.
    """

    def __init__(self, problems: list[str], source: str = "dataset") -> None:
        self.problems = list(problems)
        self.source = source
        listed = "; ".join(self.problems)
        super().__init__(f"{source} cannot be used ({len(self.problems)} problem(s)): {listed}")


class WireError(FedsiloError, ValueError):
    """Bytes received are not a valid fedsilo frame (codec header or buffers)."""


class SealError(WireError):
    """A sealed payload could not be opened: not sealed to this key, by that sender, in this
    session, or altered on the way."""


class TaskError(FedsiloError):
    """A client could not execute a task."""


class APIError(FedsiloError):
    """The server answered a request with an error status."""

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"server answered {status_code}: {detail}")


class AuthenticationError(APIError):
    """401: the token is missing, unknown, revoked or expired."""


class PermissionDenied(APIError):
    """403: the caller is authenticated but may not act here (e.g. another participant's
    tasks, a scope the token lacks)."""


class NotFoundError(APIError):
    """404: the addressed resource does not exist."""


class ConflictError(APIError):
    """409: the resource's state forbids the call (e.g. joining a completed session)."""


class ValidationError(APIError):
    """422: the request failed validation; ``detail`` names the field and the value."""


class ServerUnavailable(FedsiloError):
    """The server could not be reached (refused, reset or timed out)."""


class SessionError(FedsiloError):
    """A session ended in ``failed`` or ``canceled`` instead of ``completed``."""

    def __init__(self, session_id: str, status: str, reason: str | None) -> None:
        self.session_id = session_id
        self.status = status
        self.reason = reason
        why = f": {reason}" if reason else ""
        super().__init__(f"session {session_id} is {status}{why}")


class WaitTimeout(SessionError):
    """A wait for a session's end ran past the caller's timeout."""
