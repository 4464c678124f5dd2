"""Temporary alias of :mod:`fedsilo.server.state.artifacts` for the engine; removed when the
engine takes its artifact store from ``fedsilo.server.state``."""

from fedsilo.server.state.artifacts import ArtifactStore

__all__ = ["ArtifactStore"]
