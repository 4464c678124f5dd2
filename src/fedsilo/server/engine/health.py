"""Whether the state store takes writes: what ``/healthz`` reports, and when the server gives up.

A write that fails (the disk is full, the database file became read-only, the database
server went away) makes the server unhealthy: ``/healthz`` answers 503 with the reason. The
engine keeps retrying the write it needs (a session's end, a probe before resuming a session
whose write failed) with capped exponential backoff; when the store has refused writes for
``store_retry_timeout`` seconds the server gives up: :attr:`StoreHealth.fatal` is set and
``fedsilo server start`` exits with :data:`EXIT_STORE_UNWRITABLE`, for a supervisor to restart
it. Sessions keep their active status in the store (it could not be changed anyway), so the
restarted server resumes them from their last checkpoints once the store takes writes again.

A store error met by an API request (answered 503) counts too, but only for
:data:`REQUEST_FAILURE_WINDOW` seconds: nothing retries a request, so nothing else would clear
it.
"""

from __future__ import annotations

import errno
import threading
import time

from sqlalchemy.exc import InterfaceError, InternalError, OperationalError

__all__ = [
    "EXIT_STORE_UNWRITABLE",
    "REQUEST_FAILURE_WINDOW",
    "STORE_ERRORS",
    "STORE_UNAVAILABLE_DETAIL",
    "Backoff",
    "StoreHealth",
    "describe_store_error",
    "is_store_error",
]

#: the exit status of a server that gave up on its state store: EX_TEMPFAIL of sysexits.h
#: ("try again later"), not uvicorn's 3 (a start-up failure); documented in the README
EXIT_STORE_UNWRITABLE = 75
#: the stable ``detail`` of the 503 an API request answers when the store fails it
STORE_UNAVAILABLE_DETAIL = (
    "The state store is unavailable (it refused a read or write: a full disk, a read-only "
    "database, a lost database connection); retry later."
)
#: seconds a store error met by an API request keeps ``/healthz`` unhealthy
REQUEST_FAILURE_WINDOW = 10.0
#: the database errors that mean the store cannot be used now (disk full, read-only file,
#: lost connection), as opposed to a bug in a statement
STORE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, InternalError)
#: file errors of the artifact store (checkpoints, models) that mean the same
_FILE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EIO})


def is_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the state or artifact store cannot take writes now."""
    if isinstance(exc, STORE_ERRORS):
        return True
    return isinstance(exc, OSError) and exc.errno in _FILE_ERRNOS


def describe_store_error(exc: BaseException) -> str:
    """One line naming the error, without the SQL statement and parameters SQLAlchemy
    appends (they may hold row values)."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).splitlines()
    first = text[0] if text else ""
    return f"{type(original or exc).__name__}: {first}"[:300]


class Backoff:
    """Capped exponential delays, 0.1 s doubling to at most 5 s."""

    def __init__(self, start: float = 0.1, cap: float = 5.0) -> None:
        self._delay = start
        self._cap = cap

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self._cap)
        return delay


class StoreHealth:
    """The engine's view of its store: healthy, failing since when (and why), given up.

    Parameters
    ----------
    retry_timeout : float
        Seconds of failing writes after which :meth:`expired` is true.
    """

    def __init__(self, retry_timeout: float) -> None:
        self.retry_timeout = retry_timeout
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._since: float | None = None
        self._request_problem: tuple[str, float] | None = None
        #: set when the server gives up on the store; ``serve`` then exits non-zero
        self.fatal = threading.Event()
        self.fatal_reason = ""

    def failed(self, exc: BaseException) -> str:
        """A write the engine needs failed; returns the reason ``/healthz`` shows."""
        reason = f"the state store refuses writes ({describe_store_error(exc)})"
        with self._lock:
            self._problem = reason
            if self._since is None:
                self._since = time.monotonic()
        return reason

    def request_failed(self, exc: BaseException) -> None:
        """An API request met a store error (it was answered 503)."""
        reason = f"the state store failed a request ({describe_store_error(exc)})"
        with self._lock:
            self._request_problem = (reason, time.monotonic())

    def recovered(self) -> None:
        """A write the engine needed went through."""
        with self._lock:
            self._problem = None
            self._since = None

    def expired(self) -> bool:
        """Whether the store has refused the engine's writes for ``retry_timeout`` seconds."""
        with self._lock:
            since = self._since
        return since is not None and time.monotonic() - since >= self.retry_timeout

    def give_up(self, reason: str) -> None:
        self.fatal_reason = reason
        self.fatal.set()

    @property
    def problem(self) -> str | None:
        """Why the server is unhealthy, or None."""
        if self.fatal.is_set():
            return f"giving up: {self.fatal_reason}; the server is exiting to be restarted"
        with self._lock:
            if self._problem is not None:
                return self._problem
            if self._request_problem is not None:
                reason, at = self._request_problem
                if time.monotonic() - at < REQUEST_FAILURE_WINDOW:
                    return reason
                self._request_problem = None
        return None
