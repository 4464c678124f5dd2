"""The client that runs next to a silo's data and works on a session's tasks."""

from fedsilo.client.runtime import ClientRuntime, PreparedData

__all__ = ["ClientRuntime", "PreparedData"]
