"""The server's log lines: readable text by default, one JSON object a line on request.

``--log-format json`` (``FEDSILO_LOG_FORMAT=json``) writes each record as one line::

    {"time": "2026-12-01T23:59:01.123Z", "level": "WARNING", "logger": "fedsilo.engine",
     "message": "...", "session_id": "3f2a..."}

``session_id`` is there when the record is about one session: given as ``extra=
{"session_id": ...}``, or logged from a session's workflow thread (named ``session-<id>`` by
the engine). A record with an exception carries its traceback as ``exception``. uvicorn's own
lines go through the same handler, so a log shipper gets one format.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["JsonFormatter", "LogFormat", "configure_logging", "session_of"]

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: the engine's name for a session's workflow thread (fedsilo.server.engine.runner)
_SESSION_THREAD_PREFIX = "session-"


def session_of(record: logging.LogRecord) -> str | None:
    """The session a record is about, when known (see the module docstring)."""
    given = getattr(record, "session_id", None)
    if given is not None:
        return str(given)
    thread = record.threadName or ""
    if thread.startswith(_SESSION_THREAD_PREFIX):
        return thread[len(_SESSION_THREAD_PREFIX) :]
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601, milliseconds), ``level``,
    ``logger``, ``message``, and ``session_id`` / ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        session_id = session_of(record)
        if session_id is not None:
            entry["session_id"] = session_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        # ensure_ascii: a control character in a message cannot break the one-line framing.
        return json.dumps(entry, ensure_ascii=True, default=str)


def configure_logging(level: str, log_format: LogFormat = "text") -> logging.Handler:
    """Send every logger's records at ``level`` and above to stderr in ``log_format``.

    Replaces the root logger's handlers (a second call does not add a second handler) and
    returns the one installed.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
