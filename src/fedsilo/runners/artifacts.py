"""An artifact store in memory that remembers every version of each key.

The in-process runner's engine writes checkpoint and model frames here as the server's engine
writes them to disk or an object store; keeping each version lets a test look at the
checkpoint of any round (the server keeps only the last).
"""

from __future__ import annotations

import threading

from fedsilo.server.state import ArtifactStore

__all__ = ["MemoryArtifacts"]


class MemoryArtifacts(ArtifactStore):
    """:class:`~fedsilo.server.state.ArtifactStore` over a dictionary, with history."""

    def __init__(self) -> None:  # no filesystem: the base's constructor opens one
        self.url = "memory:"
        self.root = ""
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}
        #: key -> every frame written under it through :meth:`write_bytes`, oldest first
        self.history: dict[str, list[bytes]] = {}

    def write_bytes(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self._path(key)  # the same key rules as on disk
        frame = bytes(data)
        with self._lock:
            self._data[key] = frame
            self.history.setdefault(key, []).append(frame)

    def preload(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` as if an earlier run wrote it: not part of :attr:`history`."""
        self._path(key)
        with self._lock:
            self._data[key] = bytes(data)

    def read_bytes(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def delete_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k.startswith(prefix)]:
                del self._data[key]
                self.history.pop(key, None)

    def versions(self, key: str) -> list[bytes]:
        with self._lock:
            return list(self.history.get(key, ()))
