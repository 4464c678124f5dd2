"""fedsilo: federated learning and analytics across data silos.

The SDK's face::

    import fedsilo

    client = fedsilo.connect("http://127.0.0.1:8765", token)
    session = client.create_fl_session(
        name="tutorial", description="", min_num_clients=2, num_rounds=5,
        package_name="ffnet", model_config=model_config, data_config=data_config,
    ).start()
    session.wait()
    session.metrics().as_dict()
    session.model().as_pytorch()

Errors are in :mod:`fedsilo.errors`. Importing ``fedsilo`` does not import torch, pandas or
matplotlib; they load when a model or a metrics view first needs them.
"""

from importlib import metadata as _metadata

from fedsilo.errors import FedsiloError
from fedsilo.sdk import Client, Model, Session, SessionMetrics, connect


def _installed_version() -> str:
    try:
        return _metadata.version("fedsilo")
    except _metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


__version__ = _installed_version()

__all__ = [
    "Client",
    "FedsiloError",
    "Model",
    "Session",
    "SessionMetrics",
    "__version__",
    "connect",
]
