"""custom: PyTorch model packages uploaded by users, trained by the generic flow.

A custom package is a folder (``model.py`` with one ``torch.nn.Module``, its
``<classname>.json`` defaults, optionally ``dataset.py`` and its JSON) packed into an archive
(:mod:`.archive`) that the server stores with its SHA-256 digest. The server only ever runs
the generic round loop (:mod:`.server`) for a session of such a package: it never imports
uploaded code. A client imports it (:mod:`.loader`, :mod:`.executor`) only when its
operator approved the package or its digest (:mod:`.source`).

Parts: ``config.py`` (model_config / data_config and the supported tasks), ``archive.py``,
``loader.py``, ``restrictions.py`` (DP-SGD compatibility), ``executor.py`` (client),
``binding.py`` (client data), ``server.py`` (workflow), ``export.py``, ``source.py`` (how
``get_package`` finds uploaded packages on a server and on an approving client),
``trial.py`` (the one-epoch test before an upload). Importing this module imports no torch.
"""

from __future__ import annotations

from fedsilo.federation import ModelPackage
from fedsilo.packages.custom.config import CustomDataConfig, CustomModelConfig
from fedsilo.packages.custom.server import run
from fedsilo.wire import SessionKind

__all__ = ["CustomDataConfig", "CustomModelConfig", "server_package"]


def server_package(
    name: str, description: str
) -> ModelPackage[CustomModelConfig, CustomDataConfig]:
    """The package as the server sees an uploaded one: configs and the generic workflow.

    Its executor is the refusal of :func:`fedsilo.packages.custom.source.unapproved_executor`:
    a client finds uploaded packages through an approving source instead.
    """
    return ModelPackage(
        name=name,
        description=description or f"Uploaded custom PyTorch package {name!r}.",
        kind=SessionKind.hfl,
        model_config_type=CustomModelConfig,
        data_config_type=CustomDataConfig,
        workflow=run,
        executor_ref="fedsilo.packages.custom.source:unapproved_executor",
        export_ref="fedsilo.packages.custom.export:CustomModel",
    )
