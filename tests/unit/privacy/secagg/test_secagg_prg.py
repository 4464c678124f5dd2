"""Mask streams and pair seeds: deterministic, both ends agree, uniform-looking output."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

from fedsilo.privacy.secagg import ShareError
from fedsilo.privacy.secagg.client import pair_context
from fedsilo.privacy.secagg.prg import add_streams, context_bytes, mask_stream, pair_seed


def test_stream_is_the_chacha20_keystream() -> None:
    seed = bytes(range(32))
    stream = mask_stream(seed, 1000)
    keystream = Cipher(algorithms.ChaCha20(seed, bytes(16)), None).encryptor().update(bytes(8000))
    assert stream.tobytes() == keystream  # little-endian uint64 of the keystream
    assert np.array_equal(mask_stream(seed, 10), stream[:10])
    assert not np.array_equal(mask_stream(bytes(32), 10), stream[:10])
    with pytest.raises(ValueError, match="32 bytes"):
        mask_stream(b"short", 10)


@pytest.mark.parametrize("length", [0, 1, 16_384, 16_385, 50_001])
def test_add_streams_equals_whole_streams(length: int) -> None:
    seeds = [bytes([i]) * 32 for i in range(4)]
    target = np.arange(length, dtype=np.uint64)
    expected = target.copy()
    add_streams(target, seeds[:3], seeds[3:])
    for seed in seeds[:3]:
        expected += mask_stream(seed, length)
    expected -= mask_stream(seeds[3], length)
    assert np.array_equal(target, expected)


def test_stream_bytes_are_uniform() -> None:
    stream = mask_stream(b"\x07" * 32, 125_000).view(np.uint8)
    counts = np.bincount(stream, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    # the top bit of each value, the one two's complement signs live in, is balanced too
    top = (mask_stream(b"\x08" * 32, 100_000) >> np.uint64(63)).astype(int)
    assert stats.binomtest(int(top.sum()), top.size).pvalue > 1e-4


def test_pair_seed_agrees_from_both_ends_and_binds_context() -> None:
    a, b, c = (X25519PrivateKey.generate() for _ in range(3))
    context = pair_context("s", 1, "alice", "bob")
    assert context == pair_context("s", 1, "bob", "alice")
    ab = pair_seed(a, b.public_key().public_bytes_raw(), context)
    assert ab == pair_seed(b, a.public_key().public_bytes_raw(), context)
    assert ab != pair_seed(a, c.public_key().public_bytes_raw(), context)
    assert ab != pair_seed(a, b.public_key().public_bytes_raw(), pair_context("s", 2, "a", "b"))
    assert len(ab) == 32
    # lengths are part of the encoding: ("ab", "c") and ("a", "bc") differ
    assert context_bytes("ab", "c") != context_bytes("a", "bc")


def test_low_order_peer_key_is_refused() -> None:
    with pytest.raises(ShareError, match="not a usable X25519 key"):
        pair_seed(X25519PrivateKey.generate(), bytes(32), b"ctx")
