"""Shamir sharing over M521: every t-subset recovers, fewer fail, alterations are caught."""

from __future__ import annotations

import itertools
import secrets

import pytest

from fedsilo.privacy.secagg import ShareError, ThresholdError
from fedsilo.privacy.secagg.shamir import PRIME, SHARE_BYTES, _interpolate, combine, split


def test_the_field_is_the_mersenne_prime_m521() -> None:
    # Lucas-Lehmer: 2^p - 1 is prime iff s_(p-2) = 0 with s_0 = 4, s_(i+1) = s_i^2 - 2.
    p, value = 521, 4
    for _ in range(p - 2):
        value = (value * value - 2) % PRIME
    assert PRIME == 2**521 - 1 and value == 0
    assert PRIME > 2**256


@pytest.mark.parametrize(("n", "t"), [(2, 2), (3, 2), (5, 3), (6, 6)])
def test_every_t_subset_recovers(n: int, t: int) -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, n, t)
    assert [index for index, _ in shares] == list(range(1, n + 1))
    assert all(len(value) == SHARE_BYTES for _, value in shares)
    for size in range(t, n + 1):
        for subset in itertools.combinations(shares, size):
            assert combine(list(subset), t) == secret


def test_edge_secrets_and_fresh_randomness() -> None:
    for secret in (bytes(32), b"\xff" * 32):
        assert combine(split(secret, 4, 3)[1:], 3) == secret
    assert split(bytes(32), 3, 2) != split(bytes(32), 3, 2)


def test_fewer_than_t_shares_fail_clearly() -> None:
    shares = split(secrets.token_bytes(32), 10, 7)
    with pytest.raises(ThresholdError, match=r"needs 7 shares to be recovered\. Got 6"):
        combine(shares[:6], 7)


def test_fewer_than_t_shares_fit_every_secret() -> None:
    # Information-theoretic hiding, shown directly: t - 1 shares plus ANY candidate
    # secret lie on one polynomial of degree t - 1, so the shares favour no secret.
    shares = split(secrets.token_bytes(32), 5, 3)[:2]
    points = [(i, int.from_bytes(v, "big")) for i, v in shares]
    for candidate in (0, 1, 2**255 + 12345):
        polynomial = [(0, candidate), *points]
        assert all(_interpolate(polynomial, x) == y for x, y in points)


def test_an_altered_share_is_detected_with_exactly_t_shares() -> None:
    shares = split(secrets.token_bytes(32), 5, 3)[:3]
    index, value = shares[1]
    garbled = secrets.randbelow(PRIME).to_bytes(SHARE_BYTES, "big")
    with pytest.raises(ShareError, match="do not combine to a 32-byte secret"):
        combine([shares[0], (index, garbled), shares[2]], 3)
    # A small, deliberate shift of one share moves the secret by a small multiple and
    # can pass: that is why the server also checks each secret against a commitment
    # (test_secagg_protocol: test_a_shifted_share_is_caught_by_the_commitment).
    shifted = (int.from_bytes(value, "big") + 1).to_bytes(SHARE_BYTES, "big")
    secret = combine(shares, 3)
    assert combine([shares[0], (index, shifted), shares[2]], 3) != secret


def test_an_altered_share_is_detected_among_more_than_t() -> None:
    shares = split(secrets.token_bytes(32), 6, 3)
    index, value = shares[4]
    altered = ((int.from_bytes(value, "big") + 1) % PRIME).to_bytes(SHARE_BYTES, "big")
    with pytest.raises(ShareError, match="index 5 is not consistent"):
        combine([*shares[:4], (index, altered)], 3)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ((1, b"\x00" * SHARE_BYTES), "distinct indices"),
        ((0, b"\x00" * SHARE_BYTES), "index must be an integer in"),
        ((9, b"\x00" * 10), "66 bytes. Got 10"),
        ((9, b"\xff" * SHARE_BYTES), "not a field element"),
    ],
)
def test_malformed_shares(bad: tuple[int, bytes], message: str) -> None:
    shares = split(secrets.token_bytes(32), 3, 2)
    with pytest.raises(ShareError, match=message):
        combine([shares[0], bad], 2)


def test_split_arguments() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        split(b"x", 3, 2)
    with pytest.raises(ValueError, match="2 <= t <= n"):
        split(bytes(32), 3, 4)
