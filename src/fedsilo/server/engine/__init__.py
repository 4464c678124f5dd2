"""The session engine: runs each session's workflow in its own worker thread."""

from fedsilo.server.engine.runner import SessionEngine

__all__ = ["SessionEngine"]
