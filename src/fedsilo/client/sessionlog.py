"""The client's own log of each session it runs, kept in its state directory.

Every progress line a :class:`~fedsilo.client.runtime.ClientRuntime` emits (joined, each task
received and replied, reconnects, refusals, the session's end, the error that stopped it) is
appended, with its UTC time, to ``<state_dir>/logs/<session>/<client_name>.log``, whatever the
terminal shows (``--quiet`` and ``--log-interval`` only thin what is printed).
``fedsilo client log --session ID`` prints it, to debug a failed session after the fact (the
seed's ``iai client log``).

The log holds what the progress lines say: names, counts, timings and error messages, never
data values. It lives apart from the participant's state (keys, credential, released replies)
so ``--remove-after-complete`` can remove that state and keep the log.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["ClientLog", "log_path", "session_logs"]

_SAFE = re.compile(r"[^A-Za-z0-9_.@:-]")
_LOGS = "logs"
_SUFFIX = ".log"


def log_path(state_dir: Path, session_id: str, client_name: str) -> Path:
    """Where the client named ``client_name`` logs session ``session_id``."""
    return (
        state_dir / _LOGS / _SAFE.sub("_", session_id) / f"{_SAFE.sub('_', client_name)}{_SUFFIX}"
    )


def session_logs(state_dir: Path, session_id: str) -> dict[str, Path]:
    """The logs of ``session_id`` in ``state_dir``, by client name (sorted); empty if none.

    Several clients of one session on one machine (the tutorials run two) share a state
    directory, each with its own log.
    """
    folder = state_dir / _LOGS / _SAFE.sub("_", session_id)
    if not folder.is_dir():
        return {}
    found = sorted(p for p in folder.iterdir() if p.suffix == _SUFFIX and p.is_file())
    return {path.name.removesuffix(_SUFFIX): path for path in found}


class ClientLog:
    """Append-only log file of one participant's session.

    Opened on the first line, so a runtime that is built but never run leaves no file.
    Each line is one ``write`` on an ``O_APPEND`` descriptor (mode 0600): nothing is
    buffered, so a client killed mid-session keeps everything it logged, and two processes
    appending to one file (a restarted client beside its predecessor) do not interleave
    within a line.

    Parameters
    ----------
    path : Path
        See :func:`log_path`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def write(self, line: str) -> None:
        """Append ``line`` (one line: newlines inside it are folded) with its UTC time."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        one_line = " | ".join(part for part in line.splitlines() if part) or line
        os.write(self._fd, f"{stamp} {one_line}\n".encode())

    def close(self) -> None:
        """Close the file (a later line opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        # A runtime used through prepare()/join() only is never closed by run().
        self.close()
