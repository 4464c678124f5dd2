"""The Python SDK: connect to a server, run sessions, read their metrics and models.

::

    client = connect(url, token)
    session = client.create_fl_session(...).start()
    session.wait()
    session.metrics().as_dict()
    session.model().predict(df)
"""

from __future__ import annotations

from fedsilo.sdk.client import Client, connect
from fedsilo.sdk.metrics import SessionMetrics
from fedsilo.sdk.model import Model
from fedsilo.sdk.session import Session

__all__ = ["Client", "Model", "Session", "SessionMetrics", "connect"]
