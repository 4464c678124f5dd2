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

Why not hash straight to a u-coordinate
---------------------------------------
Any 32 bytes are an X25519 input, so ``X25519(a, BLAKE2b(x))`` would save the Elligator
step (about a fifth of a party's work) and still commute. But a random u-coordinate is on the
curve or on its quadratic twist with probability 1/2 each, and a multiplication keeps a
point where it is: whether ``f(u) = u**3 + 486662 u**2 + u`` is a square is the same for
``u`` and for ``X25519(a, u)``. A peer holding ``a * H(x)`` could read that bit and
compare it with ``H(x')`` for a guessed ``x'``: a test of a guess that rules out half the
candidates, per blinded id, without the key. (SecretFlow's psi offers both: plain
``CURVE_25519`` hashes with SHA-256 straight to the u-coordinate; ``CURVE_25519_ELLIGATOR2``
maps to the curve first.) Elligator 2 puts every ``H(x)`` on the curve, the clamped
scalar's factor 8 takes it into the prime-order subgroup, and the blinded points are then
pseudorandom elements of one group of prime order ``L`` -- the DDH argument above holds.

Speed
-----
X25519 is the fastest constant-time multiplication libsodium offers (about twice
``crypto_scalarmult_ed25519_noclamp``, which validates its input with a second
multiplication). There is no batch call, so the loops call libsodium's functions
directly (cffi, no per-call wrapper) on numpy buffers, in threads: cffi releases the GIL
for the call, so a silo's cores share the work. The Edwards-to-Montgomery conversion
needs one field inversion per point; Montgomery's trick turns a chunk's inversions into
one inversion and three multiplications per point (``pow(x, -1, p)`` per point costs as
much as the hash to the curve). Cost per id and party: one hash to the curve, two X25519
(``bench/prl.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from nacl import _sodium  # type: ignore[attr-defined]

__all__ = ["POINT_BYTES", "blind", "hash_to_group", "random_scalar", "scalar_from_seed"]

#: bytes of one encoded point (a u-coordinate)
POINT_BYTES = 32
_PERSON = b"fedsilo-psi-h2g"
_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
#: points per thread task: large enough that the pool's overhead is nothing, small enough
#: that two threads stay busy to the end
_CHUNK = 8192


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def random_scalar() -> bytes:
    """A secret scalar: 32 random bytes (X25519 clamps them)."""
    return os.urandom(32)


def scalar_from_seed(seed: bytes) -> bytes:
    """The scalar a secret seed stands for (the same every time, so a party that restarts
    blinds with the same scalar): BLAKE2b-256 of the seed."""
    return hashlib.blake2b(seed, digest_size=32, person=b"fedsilo-psi-sk").digest()


def _chunked(n: int, work: Callable[[int, int], None]) -> None:
    """``work(start, stop)`` over ``range(n)`` in chunks, on a thread per core."""
    spans = [(i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK)]
    threads = min(_threads(), len(spans))
    if threads <= 1:
        for start, stop in spans:
            work(start, stop)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="fedsilo-ecdh") as pool:
        for done in [pool.submit(work, start, stop) for start, stop in spans]:
            done.result()


def _edwards_to_montgomery(points: np.ndarray) -> np.ndarray:
    """u = (1 + y) / (1 - y) mod p for rows of Edwards encodings, one inversion in all."""
    ys = [int.from_bytes(row, "little") & _Y_MASK for row in points.view("V32").ravel().tolist()]
    if not ys:
        return np.zeros((0, POINT_BYTES), dtype=np.uint8)
    # Montgomery's trick: prefix products, one inversion, then back. y == 1 is the
    # identity, which Elligator with the cofactor cleared never yields for a hash
    # (probability ~2**-250), so no denominator is 0.
    denominators = [(1 - y) % _P for y in ys]
    prefix = []
    product = 1
    for d in denominators:
        product = product * d % _P
        prefix.append(product)
    inverse = pow(product, -1, _P)
    us = [0] * len(ys)
    for i in range(len(ys) - 1, 0, -1):
        us[i] = (1 + ys[i]) * (inverse * prefix[i - 1] % _P) % _P
        inverse = inverse * denominators[i] % _P
    us[0] = (1 + ys[0]) * inverse % _P
    joined = b"".join([u.to_bytes(POINT_BYTES, "little") for u in us])
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(ys), POINT_BYTES)


def hash_to_group(records: Sequence[bytes]) -> np.ndarray:
    """Each record's point ``H(x)`` of the prime-order group, as a u-coordinate.

    Returns
    -------
    ndarray of shape (n, POINT_BYTES), dtype uint8
    """
    n = len(records)
    blake2b = hashlib.blake2b
    uniform = np.frombuffer(
        b"".join([blake2b(r, digest_size=32, person=_PERSON).digest() for r in records]),
        dtype=np.uint8,
    ).reshape(n, POINT_BYTES)
    edwards = np.empty_like(uniform)
    out = np.empty_like(uniform)
    ffi, lib = _sodium.ffi, _sodium.lib

    def work(start: int, stop: int) -> None:
        source, target = ffi.from_buffer(uniform), ffi.from_buffer(edwards)
        to_point = lib.crypto_core_ed25519_from_uniform
        for offset in range(start * POINT_BYTES, stop * POINT_BYTES, POINT_BYTES):
            to_point(target + offset, source + offset)
        out[start:stop] = _edwards_to_montgomery(edwards[start:stop])

    _chunked(n, work)
    return out


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
        When ``points`` is not an (n, 32) uint8 array, ``scalar`` is not 32 bytes, or a row
        is a point of small order (the product would be the identity).
    """
    if points.dtype != np.uint8 or points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise ValueError(
            f"points must be a uint8 array of shape (n, {POINT_BYTES}). Got {points.dtype} "
            f"of shape {points.shape}."
        )
    if len(scalar) != 32:
        raise ValueError(f"scalar must be 32 bytes. Got {len(scalar)}.")
    source = np.ascontiguousarray(points)
    out = np.empty_like(source)
    ffi, lib = _sodium.ffi, _sodium.lib
    failed: list[int] = []

    def work(start: int, stop: int) -> None:
        inputs, target = ffi.from_buffer(source), ffi.from_buffer(out)
        secret = ffi.from_buffer(scalar)
        multiply = lib.crypto_scalarmult
        for offset in range(start * POINT_BYTES, stop * POINT_BYTES, POINT_BYTES):
            # libsodium returns -1 when the product is all zeros (a small-order input)
            if multiply(target + offset, secret, inputs + offset) != 0:
                failed.append(offset // POINT_BYTES)

    _chunked(len(source), work)
    if failed:
        raise ValueError(
            f"{len(failed)} point(s) are of small order (e.g. row {min(failed)}); a peer "
            "sent points that are not blinded ids"
        )
    return out
