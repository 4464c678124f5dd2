"""The replies a client has released, kept on its own disk.

A server that restarts re-asks the round it was in, with the same inputs (it resumes from a
checkpoint). A client that restarted too has lost its memory of what it already sent, and
answering again would release a second, differently noised answer to the same question: a
release that differential-privacy accounting (DP-SGD, private Newton, private EDA) did not
count. So the runtime keeps, per session and client, the last successful reply to each task
kind, keyed by a digest of the question (task meta and arrays), and sends that
same reply again when the same question comes back. Without DP this changes nothing: the
packages compute deterministically, so the stored reply is the one they would compute.

The runtime applies it as the outermost client mod, :func:`fedsilo.client.mods.release_once`:
the one release-once mechanism, for every package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from fedsilo.wire import Arrays

__all__ = ["ReplyStore", "default_state_dir", "question_digest"]

_SAFE = re.compile(r"[^A-Za-z0-9_.@:-]")
_DIGEST_LEN = 64  # hex SHA-256


def default_state_dir() -> Path:
    """``$FEDSILO_CLIENT_STATE_DIR``, else ``~/.fedsilo/client``."""
    configured = os.environ.get("FEDSILO_CLIENT_STATE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".fedsilo" / "client"


def question_digest(kind: str, round_: int, meta: dict[str, Any], arrays: Arrays) -> str:
    """SHA-256 over what a task asks: its kind, round, meta and arrays (names, dtypes, bytes)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([kind, round_, meta], sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.data if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()


class ReplyStore:
    """Last released reply frame per task kind for one (session, client), on disk.

    Parameters
    ----------
    root : Path
        The state directory; entries live in ``root/<session>/<client>/<kind>.reply``.
    session_id, client_name : str
    """

    def __init__(self, root: Path, session_id: str, client_name: str) -> None:
        self.folder = root / _SAFE.sub("_", session_id) / _SAFE.sub("_", client_name)

    def _path(self, kind: str) -> Path:
        return self.folder / f"{_SAFE.sub('_', kind)}.reply"

    def get(self, kind: str, digest: str) -> bytes | None:
        """The frame released for this exact question, or None."""
        try:
            data = self._path(kind).read_bytes()
        except OSError:
            return None
        # One file: the 64-character digest, then the frame (written in one atomic replace).
        if data[:_DIGEST_LEN].decode("ascii", "replace") != digest:
            return None
        return data[_DIGEST_LEN:]

    def put(self, kind: str, digest: str, frame: bytes) -> None:
        """Record a reply before it is sent; replaces this kind's previous one atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(kind)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(digest.encode("ascii") + frame)
        os.replace(tmp, path)
