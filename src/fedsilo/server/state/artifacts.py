"""Artifact store: model frames and checkpoints behind an fsspec URL.

A local folder by default; ``s3://bucket/prefix`` (with s3fs installed) or any other fsspec
filesystem by URL. Writes are atomic where the filesystem allows (write then rename), so a
killed server never leaves half a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["ArtifactStore"]


class ArtifactStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.root = self.root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"artifact key must be relative without '..'; got {key!r}")
        return f"{self.root}/{key}"

    def write_bytes(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``key``; any bytes-like buffer, written without a copy to
        ``bytes`` (the engine hands over a frame's memoryview)."""
        path = self._path(key)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if isinstance(self.fs, LocalFileSystem):
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as handle:
                    handle.write(data)
            except BaseException:
                # A full disk: the partial file would hold the space the retry needs.
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
            os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
        else:  # object stores replace whole objects atomically on put
            self.fs.pipe_file(path, data)

    def read_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        if not self.fs.exists(path):
            return None
        data: bytes = self.fs.cat_file(path)
        return data

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
