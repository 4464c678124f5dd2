"""The client half of a package, and what the client runtime lends it.

An :class:`Executor` handles the task kinds its package's workflow sends:
``handle(kind, meta, arrays) -> (meta, arrays)``, pure computation on local data, so it
unit-tests without a server. The runtime builds it with the package's factory
``executor(model_config, data_config, dataset, context=None)``, where ``context`` is an
:class:`ExecutorContext`: who this participant is, its keys (to seal payloads to peers and
open the ones sealed to it), its state directory, the abort signal, and the fast exchange for
chatty peer protocols. Executors that need none of it ignore the argument.

Sealed payloads travel as the reserved array :data:`~fedsilo.federation.task.SEALED_ARRAY`:
an executor returns ``sealed_arrays(context.seal(peer_id, plaintext))`` and receives, for a
forwarded payload, that array with ``meta["sealed_from"]`` naming the sender
(:func:`incoming_sealed` reads both).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fedsilo.federation.task import SEALED_ARRAY, Participant, Sealed
from fedsilo.wire import Arrays

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = [
    "Executor",
    "ExecutorContext",
    "ExportedModel",
    "FastExchange",
    "incoming_sealed",
]


class Executor(Protocol):
    """The client half of a package: one handler per task kind, no networking."""

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]: ...


class FastExchange(Protocol):
    """Peer messages relayed through the server's memory, for per-batch protocols.

    Bounded, never written to the database, lost on a server restart: a protocol that uses
    it resumes from its own checkpoint. Payloads should be sealed to the recipient.
    """

    def send(self, to: str, payload: bytes, tag: str = "") -> None:
        """Deliver ``payload`` to participant ``to``; blocks while its queue is full."""
        ...

    def receive(self, timeout: float | None = None) -> tuple[str, str, bytes]:
        """The next message for this participant: ``(sender id, tag, payload)``."""
        ...


class ExecutorContext(Protocol):
    """What the client runtime lends an executor (implemented in :mod:`fedsilo.client`)."""

    @property
    def session_id(self) -> str: ...

    @property
    def participant_id(self) -> str: ...

    @property
    def client_name(self) -> str: ...

    @property
    def state_dir(self) -> Path:
        """A directory private to this participant of this session (survives restarts)."""
        ...

    @property
    def abort(self) -> threading.Event:
        """Set when the session ended or the client is stopping; long work should check it."""
        ...

    @property
    def exchange(self) -> FastExchange: ...

    @property
    def package_options(self) -> Mapping[str, Any]:
        """What the silo's operator set for the session's package on the command line
        (VFL: ``storage_path``, ``raw_output``); empty when nothing was set."""
        ...

    def peers(self) -> list[Participant]:
        """The session's participants with their public keys (this one included)."""
        ...

    def seal(self, recipient_id: str, plaintext: bytes) -> Sealed:
        """Encrypt ``plaintext`` so only participant ``recipient_id`` can read it."""
        ...

    def open(self, sealed: Sealed) -> bytes:
        """Decrypt a payload sealed to this participant; raises on tampering."""
        ...


def incoming_sealed(meta: Mapping[str, Any], arrays: Arrays) -> Sealed | None:
    """The sealed payload a forwarded task carries, or None."""
    if SEALED_ARRAY not in arrays:
        return None
    sender = str(meta.get("sealed_from", ""))
    return Sealed(sender=sender, ciphertext=arrays[SEALED_ARRAY].tobytes())


class ExportedModel(Protocol):
    """A trained model as the SDK hands it to users."""

    def as_pytorch(self) -> torch.nn.Module: ...

    def predict(self, data: pd.DataFrame) -> Any: ...
