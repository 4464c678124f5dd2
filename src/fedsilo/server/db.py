"""Temporary alias of :mod:`fedsilo.server.state.database` for the engine and the
participants router; removed when they call the state store."""

from fedsilo.server.state.database import Database

__all__ = ["Database"]
