"""An in-process participant's identity and sealing, as a client's ``ClientContext`` lends
them to its mods (secure aggregation seals its shares with them)."""

from __future__ import annotations

from collections.abc import Sequence

from fedsilo.client.keys import KeyPair, open_sealed, seal
from fedsilo.federation import Participant, Sealed

__all__ = ["LocalPeer"]


class LocalPeer:
    """One participant's keys and its session's public keys, with the real
    :mod:`fedsilo.client.keys` crypto."""

    def __init__(
        self,
        session_id: str,
        participant_id: str,
        keys: KeyPair,
        joined: Sequence[Participant],
    ) -> None:
        self.session_id = session_id
        self.participant_id = participant_id
        self._keys = keys
        self._public = {p.id: p.public_key for p in joined}

    def seal(self, recipient_id: str, plaintext: bytes) -> Sealed:
        ciphertext = seal(
            self._keys,
            self._public[recipient_id],
            plaintext,
            session_id=self.session_id,
            sender_id=self.participant_id,
            recipient_id=recipient_id,
        )
        return Sealed(sender=self.participant_id, ciphertext=ciphertext)

    def open(self, sealed: Sealed) -> bytes:
        return open_sealed(
            self._keys,
            self._public[sealed.sender],
            sealed.ciphertext,
            session_id=self.session_id,
            sender_id=sealed.sender,
            recipient_id=self.participant_id,
        )
