"""One client's side of one secure aggregation: keys, shares, mask, unmask.

A :class:`ClientAggregation` lives for one round (``session_id``, ``server_round``) and moves
through the stages in order; every input the server relays is checked before the client
releases anything, because the server is exactly who must not learn an individual vector:

* ``keys()`` (stage A): a fresh X25519 mask key pair, made here and used for nothing else;
* ``shares(peers, threshold)`` (stage B): ``peers`` must contain this client's own key
  unchanged, and ``threshold`` must be a strict majority of U1 (else the server could
  collect both seeds of a client, see :mod:`~fedsilo.privacy.secagg.spec`); returns one
  plaintext :class:`~fedsilo.privacy.secagg.records.ShareRecord` per peer, to be sealed;
* ``receive(records)``: the records addressed to this client, already unsealed; each must
  name this session, round, holder and index, the same threshold, and the same mask keys
  (``keys_digest``) this client saw;
* ``mask(vector, survivors)`` (stage C): ``vector + PRG(b_u) + sum_{v > u} PRG(s_uv) -
  sum_{v < u} PRG(s_uv)`` mod ``2 ** k`` over the survivors U2, which must include this
  client, be at least ``threshold`` and be exactly the owners whose records it received;
* ``unmask(survivors, dropped)`` (stage D): for U3 the shares of their self seeds, for the
  dropped D the shares of their mask keys; never both for one client (U3 and D must be
  disjoint and cover U2; this client must be in U3; only one unmask per aggregation).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedsilo.privacy.secagg import records as rec
from fedsilo.privacy.secagg.prg import SEED_BYTES, add_streams, context_bytes, pair_seed
from fedsilo.privacy.secagg.shamir import SHARE_BYTES, split
from fedsilo.privacy.secagg.spec import SecAggError, SecAggSpec, ShareError, ThresholdError

__all__ = ["ClientAggregation", "pair_context"]

_KEY_FIELD = "mask_public_key"


def pair_context(session_id: str, server_round: int, first: str, second: str) -> bytes:
    """The HKDF context of the pair ``{first, second}``: the same from both ends."""
    low, high = sorted((first, second))
    return context_bytes("fedsilo-secagg-pair", session_id, server_round, low, high)


class ClientAggregation:
    """One client's state in one round's secure aggregation (see the module docstring).

    Parameters
    ----------
    session_id, server_round, participant_id
        Bind every seed and record to this aggregation and this client.
    spec : SecAggSpec
        The session's ``secure_aggregation``; the client checks the server's threshold
        against it.
    """

    def __init__(
        self, session_id: str, server_round: int, participant_id: str, spec: SecAggSpec
    ) -> None:
        self.session_id = session_id
        self.server_round = server_round
        self.participant_id = participant_id
        self.spec = spec
        self._stage = "new"
        self._private: X25519PrivateKey | None = None
        self._peers: dict[str, bytes] = {}
        self._threshold = 0
        self._keys_digest = ""
        self._index = 0
        self._self_seed = b""
        self._held: dict[str, rec.ShareRecord] = {}
        self._survivors: list[str] = []

    @property
    def stage(self) -> str:
        """``new``, ``keys``, ``shares``, ``masked`` or ``unmasked``."""
        return self._stage

    def _require(self, stage: str, action: str) -> None:
        if self._stage != stage:
            raise SecAggError(
                f"Cannot {action} in stage {self._stage!r} of the secure aggregation of round "
                f"{self.server_round}: it needs stage {stage!r} (stages run once, in order)."
            )

    def keys(self) -> dict[str, str]:
        """Stage A: ``{"mask_public_key": b64}`` of a fresh mask key pair."""
        self._require("new", "make mask keys")
        self._private = X25519PrivateKey.generate()
        self._stage = "keys"
        return {_KEY_FIELD: rec.b64encode(self._private.public_key().public_bytes_raw())}

    def shares(self, peers: Mapping[str, str], threshold: int) -> dict[str, bytes]:
        """Stage B: the plaintext share record for every other participant of U1.

        Parameters
        ----------
        peers : mapping of participant id to mask public key (b64)
            U1, this client included.
        threshold : int
            The shares needed to recover a seed.

        Returns
        -------
        dict of peer id to record bytes (seal each to its peer before sending).
        """
        self._require("keys", "share seeds")
        assert self._private is not None
        own_key = self._private.public_key().public_bytes_raw()
        if peers.get(self.participant_id) != rec.b64encode(own_key):
            raise ShareError(
                f"The mask keys of round {self.server_round} must list this client "
                f"({self.participant_id!r}) with the key it made; the server sent "
                f"{'another key' if self.participant_id in peers else 'none'}."
            )
        self._check_threshold(threshold, len(peers))
        self._peers = {
            peer: rec.b64decode(key, f"mask key of {peer!r}", 32) for peer, key in peers.items()
        }
        self._threshold = threshold
        self._keys_digest = rec.keys_digest(self.session_id, self.server_round, peers)
        order = sorted(peers)
        self._index = order.index(self.participant_id) + 1
        self._self_seed = secrets.token_bytes(SEED_BYTES)
        digest = rec.seed_digest(
            self.session_id, self.server_round, self.participant_id, self._self_seed
        )
        seed_shares = split(self._self_seed, len(order), threshold)
        key_shares = split(self._private.private_bytes_raw(), len(order), threshold)
        records = {
            holder: rec.ShareRecord(
                session=self.session_id,
                round=self.server_round,
                owner=self.participant_id,
                holder=holder,
                threshold=threshold,
                keys_digest=self._keys_digest,
                index=position + 1,
                self_seed_share=rec.b64encode(seed_shares[position][1]),
                mask_key_share=rec.b64encode(key_shares[position][1]),
                self_seed_digest=digest,
            )
            for position, holder in enumerate(order)
        }
        # This client holds a share of its own seeds too: it counts towards the threshold.
        self._held = {self.participant_id: records.pop(self.participant_id)}
        self._stage = "shares"
        return {holder: record.to_bytes() for holder, record in records.items()}

    def _check_threshold(self, threshold: int, n: int) -> None:
        floor = self.spec.threshold or 2
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise ShareError(f"The threshold must be an integer. Got {threshold!r}.")
        if not (max(2, floor) <= threshold <= n and 2 * threshold > n):
            raise ShareError(
                f"The threshold of round {self.server_round} must be a strict majority of the "
                f"{n} participants, at least {max(2, floor)} and at most {n}: a smaller one "
                f"would let the server recover both seeds of a client. Got {threshold}."
            )

    def receive(self, records: Mapping[str, bytes] | Sequence[bytes]) -> None:
        """The share records addressed to this client, already unsealed.

        Parameters
        ----------
        records : mapping of sender id to plaintext, or a sequence of plaintexts
            With a mapping (the sender authenticated by the sealing), each record's owner
            must be its sender.
        """
        self._require("shares", "receive shares")
        items = (
            list(records.items()) if isinstance(records, Mapping) else [(None, r) for r in records]
        )
        for sender, raw in items:
            record = rec.ShareRecord.from_bytes(raw)
            self._check_record(record, sender)
            self._held[record.owner] = record

    def _check_record(self, record: rec.ShareRecord, sender: str | None) -> None:
        expected = {
            "session": self.session_id,
            "round": self.server_round,
            "holder": self.participant_id,
            "threshold": self._threshold,
            "index": self._index,
            "keys_digest": self._keys_digest,
        }
        for field, value in expected.items():
            if getattr(record, field) != value:
                raise ShareError(
                    f"A share record from {record.owner!r} must have {field} = {value!r} "
                    f"(this client's view of round {self.server_round}). "
                    f"Got {getattr(record, field)!r}."
                )
        if sender is not None and record.owner != sender:
            raise ShareError(
                f"A share record sealed by {sender!r} names {record.owner!r} as its owner."
            )
        if record.owner not in self._peers or record.owner == self.participant_id:
            raise ShareError(f"A share record's owner {record.owner!r} is not a peer in U1.")
        if record.owner in self._held:
            raise ShareError(f"Two share records from {record.owner!r} in one round.")

    def mask(
        self, vector: npt.NDArray[np.uint64], survivors: Sequence[str]
    ) -> npt.NDArray[np.uint64]:
        """Stage C: the masked copy of an encoded vector (see the module docstring).

        Parameters
        ----------
        vector : uint64 array of shape (length,)
            :func:`~fedsilo.privacy.secagg.encoding.encode_update` output.
        survivors : sequence of participant ids
            U2: the clients whose shares were forwarded.
        """
        self._require("shares", "mask the update")
        assert self._private is not None
        group = set(survivors)
        if len(group) != len(survivors) or self.participant_id not in group:
            raise ShareError(
                f"The survivors of round {self.server_round} must be distinct and include "
                f"this client ({self.participant_id!r}). Got {sorted(survivors)}."
            )
        if len(group) < self._threshold:
            raise ThresholdError(
                f"Round {self.server_round}: {len(group)} clients sent shares, fewer than the "
                f"threshold {self._threshold}; this client does not send its update."
            )
        if group != set(self._held):
            raise ShareError(
                f"The survivors of round {self.server_round} must be exactly the clients whose "
                f"shares this client holds: missing {sorted(group - set(self._held))}, "
                f"not survivors {sorted(set(self._held) - group)}."
            )
        values = np.asarray(vector)
        if values.dtype != np.uint64 or values.ndim != 1:
            raise SecAggError(
                f"The masked vector must be 1-d uint64 (encode_update). Got {values.dtype} of "
                f"shape {values.shape}."
            )
        plus: list[bytes] = [self._self_seed]
        minus: list[bytes] = []
        for peer in sorted(group - {self.participant_id}):
            seed = pair_seed(
                self._private,
                self._peers[peer],
                pair_context(self.session_id, self.server_round, self.participant_id, peer),
            )
            (plus if peer > self.participant_id else minus).append(seed)
        masked = values.copy()
        add_streams(masked, plus, minus)
        masked &= np.uint64((1 << self.spec.modulus_bits) - 1)
        self._survivors = sorted(group)
        self._stage = "masked"
        return masked

    def unmask(
        self, survivors: Sequence[str], dropped: Sequence[str]
    ) -> dict[str, dict[str, str | int]]:
        """Stage D: ``{owner: share}`` of U3's self seeds and D's mask keys (records.py)."""
        self._require("masked", "reveal shares")
        sent, gone = set(survivors), set(dropped)
        if len(sent) != len(survivors) or len(gone) != len(dropped):
            raise ShareError(
                f"The senders and dropped clients of round {self.server_round} must be "
                f"distinct ids. Got senders {sorted(survivors)}, dropped {sorted(dropped)}."
            )
        if sent & gone:
            raise ShareError(
                f"Refusing to reveal both seeds of {sorted(sent & gone)}: a client is either a "
                f"sender of masked input or dropped, never both."
            )
        if sent | gone != set(self._survivors):
            raise ShareError(
                f"The senders and dropped clients of round {self.server_round} must split the "
                f"{len(self._survivors)} survivors {self._survivors} exactly. Got senders "
                f"{sorted(survivors)}, dropped {sorted(dropped)}."
            )
        if self.participant_id not in sent:
            raise ShareError(
                f"This client ({self.participant_id!r}) sent its masked input, so it cannot be "
                f"listed as dropped: refusing to reveal the shares of its mask key."
            )
        if len(sent) < self._threshold:
            raise ThresholdError(
                f"Round {self.server_round}: {len(sent)} clients sent masked input, fewer than "
                f"the threshold {self._threshold}; no shares are revealed."
            )
        reply: dict[str, dict[str, str | int]] = {}
        for owner in sorted(sent | gone):
            record = self._held[owner]
            if owner in sent:
                share = rec.UnmaskShare(
                    rec.SELF_SEED,
                    record.index,
                    rec.b64decode(record.self_seed_share, "self_seed_share", SHARE_BYTES),
                    record.self_seed_digest,
                )
            else:
                share = rec.UnmaskShare(
                    rec.MASK_KEY,
                    record.index,
                    rec.b64decode(record.mask_key_share, "mask_key_share", SHARE_BYTES),
                )
            reply[owner] = share.to_json()
        self._stage = "unmasked"
        return reply
