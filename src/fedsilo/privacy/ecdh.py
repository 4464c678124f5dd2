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
does not bind libsodium's ristretto255 functions, so the group here is the same prime-order
group (order ``L = 2**252 + 27742317777372353535851937790883648493``) seen through the
bindings it has, in Montgomery form:

* hash to the group: ``crypto_core_ed25519_from_uniform(BLAKE2b-256(record))`` (Elligator 2
  with the cofactor cleared: a point of the prime-order subgroup), sent as the u-coordinate
  of Curve25519, ``u = (1 + y) / (1 - y) mod 2**255 - 19`` (computed here; the binding that
  converts also re-checks the subgroup, which costs a full multiplication);
* blinding: X25519, ``crypto_scalarmult(s, u)``, with a 32-byte secret ``s`` (clamped by
  X25519: a multiple of 8, so a point a peer sends off the subgroup loses its small-order
  part; Curve25519 is twist-secure). x-only arithmetic commutes like the group:
  ``X25519(b, X25519(a, u)) == X25519(a, X25519(b, u))``.

X25519 is the fastest constant-time multiplication libsodium offers (about twice
``crypto_scalarmult_ed25519_noclamp``, which validates its input with a second
multiplication). There is no batch call: one multiplication is one call, which bounds the
mode's speed (``bench/prl.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from nacl import bindings

__all__ = ["POINT_BYTES", "blind", "hash_to_group", "random_scalar", "scalar_from_seed"]

#: bytes of one encoded point (a u-coordinate)
POINT_BYTES = 32
_PERSON = b"fedsilo-psi-h2g"
_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1


def random_scalar() -> bytes:
    """A secret scalar: 32 random bytes (X25519 clamps them)."""
    return os.urandom(32)


def scalar_from_seed(seed: bytes) -> bytes:
    """The scalar a secret seed stands for (the same every time, so a party that restarts
    blinds with the same scalar): BLAKE2b-256 of the seed."""
    return hashlib.blake2b(seed, digest_size=32, person=b"fedsilo-psi-sk").digest()


def hash_to_group(records: Sequence[bytes]) -> np.ndarray:
    """Each record's point ``H(x)`` of the prime-order group, as a u-coordinate.

    Returns
    -------
    ndarray of shape (n, POINT_BYTES), dtype uint8
    """
    to_point = bindings.crypto_core_ed25519_from_uniform
    blake2b = hashlib.blake2b
    out = bytearray(POINT_BYTES * len(records))
    for i, record in enumerate(records):
        point = to_point(blake2b(record, digest_size=32, person=_PERSON).digest())
        y = int.from_bytes(point, "little") & _Y_MASK
        # y == 1 is the identity, which Elligator with the cofactor cleared never yields
        # for a hash (probability ~2**-250).
        u = (1 + y) * pow(1 - y, -1, _P) % _P
        out[POINT_BYTES * i : POINT_BYTES * (i + 1)] = u.to_bytes(POINT_BYTES, "little")
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(len(records), POINT_BYTES).copy()


def blind(points: np.ndarray, scalar: bytes) -> np.ndarray:
    """``X25519(scalar, u)`` for every row ``u`` of ``points``.

    Parameters
    ----------
    points : ndarray of shape (n, POINT_BYTES), dtype uint8
    scalar : bytes
        From :func:`random_scalar` or :func:`scalar_from_seed`.

    Returns
    -------
    ndarray of shape (n, POINT_BYTES), dtype uint8

    Raises
    ------
    ValueError
        When ``points`` is not an (n, 32) uint8 array.
    nacl.exceptions.RuntimeError
        When a row is a point of small order (the product is the identity).
    """
    if points.dtype != np.uint8 or points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise ValueError(
            f"points must be a uint8 array of shape (n, {POINT_BYTES}). Got {points.dtype} "
            f"of shape {points.shape}."
        )
    multiply = bindings.crypto_scalarmult
    rows: list[bytes] = np.ascontiguousarray(points).view(f"V{POINT_BYTES}").ravel().tolist()
    joined = b"".join([multiply(scalar, p) for p in rows])
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(rows), POINT_BYTES).copy()
