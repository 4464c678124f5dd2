"""The data directory is the server's alone: folders 0700, files 0600.

It holds the database (every session's configs, metrics, logs, token hashes), the artifacts
(models, checkpoints) and the admin token, so no other local user may read it. Folders are
created 0700 and an existing one that others can enter is tightened to 0700 (with a warning,
once); the SQLite files are made 0600 by :mod:`fedsilo.server.state.database`, the admin
token file by :func:`write_private_file`.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["local_path", "private_directory", "write_private_file"]

logger = logging.getLogger("fedsilo.server")


def private_directory(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, or tighten it to 0700.

    A folder this process does not own is left as it is, with a warning: changing another
    user's folder is not the server's call.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            logger.warning(
                "%s is mode %04o: other users can read the server's files; expected 0700 "
                "(could not change it: %s)",
                path,
                mode,
                exc.strerror,
            )
        else:
            logger.warning(
                "%s was mode %04o; set to 0700 (it holds the server's state)", path, mode
            )
    return path


def write_private_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` with mode 0600, replacing what was there.

    The mode is set at creation (no moment when the file exists world-readable) and again
    after, for a file that existed with a looser mode.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(content)


def local_path(url: str) -> Path | None:
    """The folder of a local fsspec URL (a plain path or ``file://``); ``None`` for another
    filesystem (``s3://``...), whose access the object store governs."""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    if "://" in url:
        return None
    return Path(url)
