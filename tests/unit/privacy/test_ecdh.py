"""The ECDH-PSI group operations against references: PyNaCl's own wrappers point by point,
the curve equation, and the commutation the protocol rests on (module docstring of
:mod:`fedsilo.privacy.ecdh`)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from nacl import bindings

from fedsilo.privacy import ecdh

P = 2**255 - 19
A = 486662


def _square(value: int) -> bool:
    """Euler's criterion: value is a square mod p (0 counts as one)."""
    return pow(value % P, (P - 1) // 2, P) in (0, 1)


def _on_curve(u: bytes) -> bool:
    x = int.from_bytes(u, "little") & ((1 << 255) - 1)
    return _square(x**3 + A * x**2 + x)


def _reference_hash(record: bytes) -> bytes:
    uniform = hashlib.blake2b(record, digest_size=32, person=b"fedsilo-psi-h2g").digest()
    y = int.from_bytes(bindings.crypto_core_ed25519_from_uniform(uniform), "little")
    y &= (1 << 255) - 1
    return ((1 + y) * pow(1 - y, -1, P) % P).to_bytes(32, "little")


def test_hash_to_group_equals_pynacl_point_by_point_and_lands_on_the_curve() -> None:
    # more than one chunk, so the threaded path and the batched inversion are exercised
    records = [os.urandom(13) for _ in range(ecdh._CHUNK + 300)]
    points = ecdh.hash_to_group(records)
    assert points.shape == (len(records), 32) and points.dtype == np.uint8
    sample = [*range(0, len(records), 97), len(records) - 1]
    for i in sample:
        assert bytes(points[i]) == _reference_hash(records[i])
        assert _on_curve(bytes(points[i]))
    assert len(ecdh.hash_to_group([])) == 0


def test_blind_equals_x25519_and_commutes() -> None:
    points = ecdh.hash_to_group([i.to_bytes(8, "big") for i in range(ecdh._CHUNK + 50)])
    a, b = ecdh.random_scalar(), ecdh.scalar_from_seed(b"seed")
    blinded = ecdh.blind(points, a)
    for i in (0, 1, ecdh._CHUNK, ecdh._CHUNK + 49):
        assert bytes(blinded[i]) == bindings.crypto_scalarmult(a, bytes(points[i]))
        assert _on_curve(bytes(blinded[i]))
    np.testing.assert_array_equal(ecdh.blind(blinded, b), ecdh.blind(ecdh.blind(points, b), a))
    assert ecdh.blind(points[:0], a).shape == (0, 32)


def test_a_small_order_point_is_refused() -> None:
    points = ecdh.hash_to_group([b"x", b"y"])
    points[1] = 0  # u = 0: order 2, the product is the identity
    with pytest.raises(ValueError, match=r"1 point\(s\) are of small order \(e.g. row 1\)"):
        ecdh.blind(points, ecdh.random_scalar())
    with pytest.raises(ValueError, match="scalar must be 32 bytes"):
        ecdh.blind(points[:1], b"short")


def test_blinding_keeps_the_curve_or_twist_bit_which_is_why_ids_go_through_elligator() -> None:
    # The argument of the module docstring: a raw 32-byte hash is on the twist half the
    # time and stays there after X25519, so a blinded raw hash would leak that bit.
    scalar = ecdh.random_scalar()
    raw = [hashlib.blake2b(i.to_bytes(4, "big"), digest_size=32).digest() for i in range(64)]
    sides = [_on_curve(u) for u in raw]
    assert 10 < sum(sides) < 54  # both halves occur
    for u, side in zip(raw, sides, strict=True):
        assert _on_curve(bindings.crypto_scalarmult(scalar, u)) == side
