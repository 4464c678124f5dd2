"""The Python SDK: connect to a server, run sessions, read their metrics and models.

::

    client = connect(url, token)
    session = client.create_fl_session(...).start()
    session.wait()
    session.metrics().as_dict()
    session.model().predict(df)

    auth = connect_to_auth_client(url, token)   # users, scoped tokens, the audit log
"""

from __future__ import annotations

from fedsilo.sdk.auth import AuthClient, connect_to_auth_client
from fedsilo.sdk.client import Client, connect
from fedsilo.sdk.metrics import SessionMetrics
from fedsilo.sdk.model import Model
from fedsilo.sdk.session import Session

__all__ = [
    "AuthClient",
    "Client",
    "Model",
    "Session",
    "SessionMetrics",
    "connect",
    "connect_to_auth_client",
]
