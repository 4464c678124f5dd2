"""What the client runtime lends an executor: :class:`ClientContext`.

It implements :class:`fedsilo.federation.ExecutorContext`: who this participant is, its
state directory, the abort signal, the session's peers with their public keys, sealing to a
peer and opening what a peer sealed to it, and the fast exchange for chatty peer protocols.

The executor is built before the join (so a package can refuse this silo's data before the
session sees it), so the participant's id arrives later: :meth:`ClientContext.joined`. Asking
for it, the peers, or sealing before then raises.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.client.keys import KeyPair, decode_public_key, open_sealed, seal
from fedsilo.errors import SealError
from fedsilo.federation.task import Participant, Sealed

if TYPE_CHECKING:
    from fedsilo.client.connection import Connection
    from fedsilo.federation.executor import FastExchange

__all__ = ["ClientContext"]


class ClientContext:
    """One participant's :class:`~fedsilo.federation.ExecutorContext`.

    Parameters
    ----------
    connection : Connection
        The participant's calls (peers are listed through it).
    client_name : str
    keys : KeyPair
        This participant's own key pair (from its state directory).
    state_dir : Path
        A directory private to this participant of this session.
    package_options : mapping, optional
        What the operator set for the session's package (:attr:`package_options`).
    """

    def __init__(
        self,
        connection: Connection,
        client_name: str,
        keys: KeyPair,
        state_dir: Path,
        package_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._package_options = dict(package_options or {})
        self._connection = connection
        self._client_name = client_name
        self._keys = keys
        self._state_dir = state_dir
        self._abort = threading.Event()
        self._peers: dict[str, Participant] = {}
        self._exchange: FastExchange | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ identity

    @property
    def session_id(self) -> str:
        return self._connection.session_id

    @property
    def participant_id(self) -> str:
        participant_id = self._connection.participant_id
        if participant_id is None:
            raise RuntimeError(
                "The participant id is known once the client joined; an executor asks for "
                "it while handling a task, not while it is built."
            )
        return participant_id

    @property
    def client_name(self) -> str:
        return self._client_name

    @property
    def state_dir(self) -> Path:
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._state_dir

    @property
    def abort(self) -> threading.Event:
        return self._abort

    @property
    def package_options(self) -> Mapping[str, Any]:
        return self._package_options

    @property
    def keys(self) -> KeyPair:
        return self._keys

    @property
    def exchange(self) -> FastExchange:
        with self._lock:
            if self._exchange is None:
                # Imported here: only chatty protocols (SplitNN) use the fast exchange.
                from fedsilo.client.exchange import HttpExchange

                credential = self._connection.credential or ""
                self._exchange = HttpExchange(
                    self._connection.api, self.session_id, self.participant_id, credential
                )
            return self._exchange

    # --------------------------------------------------------------------- peers

    def peers(self) -> list[Participant]:
        """The session's participants with their public keys (this one included)."""
        listed = self._connection.participants()
        peers = [
            Participant(
                id=p.id,
                client_name=p.client_name,
                dataset=p.dataset,
                public_key=decode_public_key(p.public_key) if p.public_key else b"",
            )
            for p in listed
        ]
        with self._lock:
            self._peers = {p.id: p for p in peers}
        return peers

    def _public_key(self, participant_id: str) -> bytes:
        with self._lock:
            known = self._peers.get(participant_id)
        if known is None or not known.public_key:
            # A peer that joined since the last listing: list again once.
            known = next((p for p in self.peers() if p.id == participant_id), None)
        if known is None or not known.public_key:
            raise SealError(
                f"Participant {participant_id} is not a participant of session "
                f"{self.session_id} with a public key; cannot seal to it or open its payload."
            )
        return known.public_key

    def seal(self, recipient_id: str, plaintext: bytes) -> Sealed:
        """Encrypt ``plaintext`` so only participant ``recipient_id`` can read it."""
        ciphertext = seal(
            self._keys,
            self._public_key(recipient_id),
            plaintext,
            session_id=self.session_id,
            sender_id=self.participant_id,
            recipient_id=recipient_id,
        )
        return Sealed(sender=self.participant_id, ciphertext=ciphertext)

    def open(self, sealed: Sealed) -> bytes:
        """Decrypt a payload sealed to this participant; raises :class:`SealError` else."""
        return open_sealed(
            self._keys,
            self._public_key(sealed.sender),
            sealed.ciphertext,
            session_id=self.session_id,
            sender_id=sealed.sender,
            recipient_id=self.participant_id,
        )
