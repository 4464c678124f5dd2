"""The server's side of one secure aggregation: thresholds, and recovering the sum.

The server never holds an individual vector in the clear: it adds the masked vectors of
U3, rebuilds from the holders' shares the self seed ``b_v`` of every ``v`` in U3 and the
mask key ``s_d`` of every dropped ``d`` in ``D = U2 \\ U3``, and removes exactly the masks
that do not cancel: ``PRG(b_v)`` for ``v`` in U3, and the pairwise masks between each ``d``
and each ``v`` in U3 (``v`` added ``PRG(s_vd)`` when ``d > v``, subtracted it when
``d < v``). What is left is ``sum_{v in U3} encode(w_v x_v || w_v)`` mod ``2 ** k``.

Every recovered secret is checked against a commitment made before anyone dropped: a self
seed against the digest its owner put in every share record, a mask key against the
public key its owner sent in stage A. A tampered or inconsistent share is a
:class:`ShareError` naming the owner, never a silently wrong sum.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedsilo.errors import ConfigError
from fedsilo.privacy.secagg import records as rec
from fedsilo.privacy.secagg.client import pair_context
from fedsilo.privacy.secagg.encoding import FixedPoint, value_bytes
from fedsilo.privacy.secagg.prg import add_streams, pair_seed
from fedsilo.privacy.secagg.shamir import combine
from fedsilo.privacy.secagg.spec import SecAggError, SecAggSpec, ShareError, ThresholdError

__all__ = ["ServerAggregation"]

Vector = npt.NDArray[np.uint64]
# Sum the masked vectors chunk by chunk, like prg.add_streams, so the running total stays
# in cache instead of being read and written once per client.
_CHUNK = 1 << 14


class ServerAggregation:
    """One round's secure aggregation on the server.

    Parameters
    ----------
    session_id, server_round
        As the clients were given them.
    spec : SecAggSpec
    participants : mapping of participant id to mask public key (b64)
        U1: the clients that answered stage A, with the keys they sent.

    Attributes
    ----------
    threshold : int
        The ``t`` to send in stage B: ``spec.resolve_threshold(len(participants))``.
    fixed : FixedPoint
        The encoding of the spec, for :func:`~fedsilo.privacy.secagg.encoding.decode_mean`.

    Raises
    ------
    ThresholdError
        Fewer than 2 participants, or fewer than an explicit threshold.
    """

    def __init__(
        self,
        session_id: str,
        server_round: int,
        spec: SecAggSpec,
        participants: Mapping[str, str],
    ) -> None:
        self.session_id = session_id
        self.server_round = server_round
        self.spec = spec
        n = len(participants)
        if n < 2 or (spec.threshold is not None and spec.threshold > n):
            raise ThresholdError(
                f"Round {server_round}: {n} client(s) sent mask keys; secure aggregation "
                f"needs at least {max(2, spec.threshold or 2)}."
            )
        try:
            self.threshold = spec.resolve_threshold(n)
        except ConfigError as exc:
            raise SecAggError(str(exc)) from exc
        self.keys = {
            pid: rec.b64decode(key, f"mask key of {pid!r}", 32) for pid, key in participants.items()
        }
        self.fixed = FixedPoint.from_spec(spec)
        self._index = {pid: position + 1 for position, pid in enumerate(sorted(participants))}

    def require(self, stage: str, replied: Collection[str]) -> None:
        """Raise :class:`ThresholdError` when fewer than ``threshold`` clients ``replied``
        at ``stage`` (the reason names the stage, the count and the threshold)."""
        if len(set(replied)) < self.threshold:
            raise ThresholdError(
                f"Secure aggregation of round {self.server_round} cannot complete: "
                f"{len(set(replied))} of {len(self.keys)} clients answered {stage!r}, fewer "
                f"than the threshold {self.threshold}."
            )

    def recover(
        self,
        masked: Mapping[str, npt.NDArray[Any]],
        shares: Mapping[str, Mapping[str, object]],
        survivors: Sequence[str],
        senders: Sequence[str],
    ) -> Vector:
        """The sum of the senders' encoded vectors mod ``2 ** k``.

        Parameters
        ----------
        masked : mapping of sender id to its masked vector
            Exactly U3; each the uint64 vector of ``ClientAggregation.mask`` or its
            :func:`~fedsilo.privacy.secagg.encoding.pack` (uint8), summed without unpacking
            it first.
        shares : mapping of holder id to its unmask reply
            At least ``threshold`` holders, all in U3.
        survivors : sequence of ids
            U2: the clients whose share records were forwarded (sent to stage C).
        senders : sequence of ids
            U3: the clients whose masked vectors arrived (sent to stage D).

        Raises
        ------
        ThresholdError
            Fewer than ``threshold`` senders or holders.
        ShareError
            A reply that is malformed, covers the wrong clients, or shares that do not
            recover a secret consistent with its owner's commitment.
        """
        u2, u3 = set(survivors), set(senders)
        if not u2 <= set(self.keys) or not u3 <= u2:
            raise SecAggError(
                f"Round {self.server_round}: the senders must be survivors and the survivors "
                f"participants. Got survivors {sorted(u2 - set(self.keys))} not participants, "
                f"senders {sorted(u3 - u2)} not survivors."
            )
        if set(masked) != u3:
            raise SecAggError(
                f"Round {self.server_round}: masked vectors must come from exactly the senders "
                f"{sorted(u3)}. Got {sorted(masked)}."
            )
        self.require("masked input", u3)
        self.require("secagg.unmask", shares)
        outsiders = set(shares) - u3
        if outsiders:
            raise ShareError(
                f"Round {self.server_round}: unmask replies from {sorted(outsiders)}, who sent "
                f"no masked input."
            )
        dropped = u2 - u3
        self_seeds, mask_keys = self._collect(shares, u3, dropped)
        total = self._sum(masked)
        plus: list[bytes] = []
        minus: list[bytes] = [self._self_seed(v, self_seeds[v]) for v in sorted(u3)]
        for d in sorted(dropped):
            private = self._mask_key(d, mask_keys[d])
            for v in sorted(u3):
                seed = pair_seed(
                    private, self.keys[v], pair_context(self.session_id, self.server_round, v, d)
                )
                # v added PRG(s_vd) when d > v: take it away; it subtracted it otherwise.
                (minus if d > v else plus).append(seed)
        add_streams(total, plus, minus)
        total &= self.fixed.mask
        return total

    def _collect(
        self, shares: Mapping[str, Mapping[str, object]], u3: set[str], dropped: set[str]
    ) -> tuple[dict[str, list[rec.UnmaskShare]], dict[str, list[rec.UnmaskShare]]]:
        self_seeds: dict[str, list[rec.UnmaskShare]] = {v: [] for v in u3}
        mask_keys: dict[str, list[rec.UnmaskShare]] = {d: [] for d in dropped}
        for holder in sorted(shares):
            reply = shares[holder]
            if not isinstance(reply, Mapping) or set(reply) != u3 | dropped:
                got = sorted(reply) if isinstance(reply, Mapping) else type(reply).__name__
                raise ShareError(
                    f"Holder {holder!r}'s unmask reply must cover exactly the survivors "
                    f"{sorted(u3 | dropped)}. Got {got}."
                )
            for owner, body in reply.items():
                share = rec.UnmaskShare.from_json(body, holder, owner)
                wanted = rec.SELF_SEED if owner in u3 else rec.MASK_KEY
                if share.secret != wanted or share.index != self._index[holder]:
                    raise ShareError(
                        f"Holder {holder!r} must reveal the {wanted} share of {owner!r} at "
                        f"index {self._index[holder]}. Got the {share.secret} share at index "
                        f"{share.index}."
                    )
                (self_seeds if owner in u3 else mask_keys)[owner].append(share)
        return self_seeds, mask_keys

    def _self_seed(self, owner: str, shares: list[rec.UnmaskShare]) -> bytes:
        digests = {share.digest for share in shares}
        if len(digests) != 1:
            raise ShareError(
                f"The holders of {owner!r}'s shares disagree on the commitment of its self "
                f"seed: a share record was altered."
            )
        seed = self._combine(owner, "self seed", shares)
        if rec.seed_digest(self.session_id, self.server_round, owner, seed) != digests.pop():
            raise ShareError(
                f"The shares of {owner!r}'s self seed do not match its commitment: a share was "
                f"altered."
            )
        return seed

    def _mask_key(self, owner: str, shares: list[rec.UnmaskShare]) -> X25519PrivateKey:
        private = X25519PrivateKey.from_private_bytes(self._combine(owner, "mask key", shares))
        if private.public_key().public_bytes_raw() != self.keys[owner]:
            raise ShareError(
                f"The shares of {owner!r}'s mask key do not match the public key it sent: a "
                f"share was altered."
            )
        return private

    def _combine(self, owner: str, what: str, shares: list[rec.UnmaskShare]) -> bytes:
        try:
            return combine([(share.index, share.share) for share in shares], self.threshold)
        except ThresholdError as exc:
            raise ThresholdError(f"The {what} of {owner!r}: {exc}") from exc
        except ShareError as exc:
            raise ShareError(f"The {what} of {owner!r}: {exc}") from exc

    def _sum(self, masked: Mapping[str, npt.NDArray[Any]]) -> Vector:
        width = value_bytes(self.spec.modulus_bits)
        senders = sorted(masked)
        vectors = [np.asarray(masked[v]) for v in senders]
        lengths = {
            v: (x.size // width if x.dtype == np.uint8 else x.size)
            for v, x in zip(senders, vectors, strict=True)
        }
        length = lengths[senders[0]]
        for sender, vector in zip(senders, vectors, strict=True):
            packed_ok = vector.dtype == np.uint8 and vector.size % width == 0
            if vector.ndim != 1 or not (vector.dtype == np.uint64 or packed_ok):
                raise SecAggError(
                    f"The masked vector of {sender!r} must be 1-d uint64, or uint8 from pack() "
                    f"({width} bytes a value). Got {vector.dtype} of shape {vector.shape}."
                )
            if lengths[sender] != length:
                raise SecAggError(
                    f"The masked vectors must all have {length} values; {sender!r}'s has "
                    f"{lengths[sender]}."
                )
        total = np.zeros(length, dtype=np.uint64)
        # Packed vectors are widened chunk by chunk into one small buffer whose high bytes
        # stay zero, instead of unpacking each into a full uint64 copy first.
        widened = np.zeros((_CHUNK, 8), dtype=np.uint8)
        for start in range(0, length, _CHUNK):
            size = min(_CHUNK, length - start)
            part = total[start : start + size]
            for vector in vectors:
                if vector.dtype == np.uint8:
                    widened[:size, :width] = vector[start * width : (start + size) * width].reshape(
                        size, width
                    )
                    chunk = widened[:size].view("<u8").reshape(size)
                else:
                    chunk = vector[start : start + size]
                np.add(part, chunk, out=part)
        return total
