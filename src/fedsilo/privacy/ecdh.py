"""Commutative blinding for ECDH private set intersection (the ``prl`` package's ``ecdh``).

Each party hashes its canonical id records (:mod:`fedsilo.privacy.psi`) to points of a
prime-order group and multiplies them by a secret scalar. Scalar multiplication commutes,
so ``b * (a * H(x)) == a * (b * H(x))``: after each party has blinded both sets once, equal
ids give equal *double-blinded* points, and nothing else can be compared. Without ``a``
nobody can test a guess ``x'`` against ``a * H(x)`` (the decisional Diffie-Hellman
assumption), so what crosses is pseudorandom except for the intersection.

The group
---------
The seed names ristretto255. PyNaCl 1.6.2 (the well-kept libsodium binding fedsilo uses)
does not bind libsodium's ristretto255 functions, so the group here is the prime-order
subgroup of Ed25519 (order ``L = 2**252 + 27742317777372353535851937790883648493``) through
the bindings it does have:

* hash to the group: ``crypto_core_ed25519_from_uniform(BLAKE2b-256(record))`` (Elligator 2,
  then the cofactor cleared: the point is in the prime-order subgroup);
* blinding: ``crypto_scalarmult_ed25519_noclamp(s, P)`` with ``s`` uniform in ``[1, L)``
  (``crypto_core_ed25519_scalar_reduce`` of 64 random bytes); libsodium refuses a result
  of small order.

Ristretto255 is this same group with an encoding that hides the cofactor; the only thing
it adds is that every encoding is a prime-order point. Here the points a party receives
are not checked for a small-order component (``crypto_core_ed25519_is_valid_point`` costs
half a multiplication each): a party that deviates from the protocol could learn the other's
scalar modulo 8, which tells it nothing about ids. The parties are assumed semi-honest.

libsodium offers no batch call: one multiplication is one call (~40-80 us on one core of
this machine), which bounds the mode's speed (see ``bench/prl.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from nacl import bindings

__all__ = ["POINT_BYTES", "blind", "hash_to_group", "random_scalar", "scalar_from_seed"]

#: bytes of one encoded point
POINT_BYTES = 32
_PERSON = b"fedsilo-psi-h2g"


def random_scalar() -> bytes:
    """A secret scalar, uniform in ``[1, L)`` (32 bytes, little-endian)."""
    while True:
        scalar: bytes = bindings.crypto_core_ed25519_scalar_reduce(os.urandom(64))
        if any(scalar):
            return scalar


def scalar_from_seed(seed: bytes) -> bytes:
    """The scalar in ``[1, L)`` a 32-byte secret seed stands for (the same every time, so a
    party that restarts blinds with the same scalar): BLAKE2b-512 of the seed, reduced."""
    wide = hashlib.blake2b(seed, digest_size=64, person=b"fedsilo-psi-sk").digest()
    scalar: bytes = bindings.crypto_core_ed25519_scalar_reduce(wide)
    if not any(scalar):  # probability 2**-252
        raise ValueError("the seed reduces to the zero scalar; draw another")
    return scalar


def hash_to_group(records: Sequence[bytes]) -> np.ndarray:
    """Each record's point ``H(x)`` in the prime-order group.

    Returns
    -------
    ndarray of shape (n, POINT_BYTES), dtype uint8
    """
    to_point = bindings.crypto_core_ed25519_from_uniform
    blake2b = hashlib.blake2b
    joined = b"".join(
        [to_point(blake2b(r, digest_size=32, person=_PERSON).digest()) for r in records]
    )
    return _points(joined, len(records))


def blind(points: np.ndarray, scalar: bytes) -> np.ndarray:
    """``scalar * P`` for every row ``P`` of ``points``.

    Parameters
    ----------
    points : ndarray of shape (n, POINT_BYTES), dtype uint8
    scalar : bytes
        From :func:`random_scalar`.

    Returns
    -------
    ndarray of shape (n, POINT_BYTES), dtype uint8

    Raises
    ------
    ValueError
        When ``points`` is not an (n, 32) uint8 array.
    nacl.exceptions.RuntimeError
        When a row is not a point of the group (or of small order).
    """
    if points.dtype != np.uint8 or points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise ValueError(
            f"points must be a uint8 array of shape (n, {POINT_BYTES}). Got {points.dtype} "
            f"of shape {points.shape}."
        )
    multiply = bindings.crypto_scalarmult_ed25519_noclamp
    rows: list[bytes] = np.ascontiguousarray(points).view(f"V{POINT_BYTES}").ravel().tolist()
    return _points(b"".join([multiply(scalar, p) for p in rows]), len(rows))


def _points(joined: bytes, n: int) -> np.ndarray:
    return np.frombuffer(joined, dtype=np.uint8).reshape(n, POINT_BYTES).copy()
