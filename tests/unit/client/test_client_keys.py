"""Sealed payloads: only the recipient opens them, the sender is authenticated, tampering fails."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fedsilo.client.keys import (
    SEAL_OVERHEAD,
    KeyPair,
    decode_public_key,
    encode_public_key,
    open_sealed,
    seal,
)
from fedsilo.errors import SealError

IDS = {"session_id": "0123456789", "sender_id": "a1", "recipient_id": "b2"}


def test_recipient_opens_what_the_sender_sealed() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    blob = seal(alice, bob.public_bytes, b"psi keys", **IDS)
    assert len(blob) == len(b"psi keys") + SEAL_OVERHEAD
    assert b"psi keys" not in blob
    assert open_sealed(bob, alice.public_bytes, blob, **IDS) == b"psi keys"


def test_two_seals_of_the_same_plaintext_differ() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    assert seal(alice, bob.public_bytes, b"x", **IDS) != seal(alice, bob.public_bytes, b"x", **IDS)


@pytest.mark.parametrize(
    "change",
    ["other recipient", "other sender", "other session", "flipped byte", "truncated"],
)
def test_anything_else_fails_to_open(change: str) -> None:
    alice, bob, mallory = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    blob = seal(alice, bob.public_bytes, b"secret", **IDS)
    recipient, sender_public, ids = bob, alice.public_bytes, dict(IDS)
    if change == "other recipient":
        recipient = mallory
    elif change == "other sender":
        sender_public = mallory.public_bytes
    elif change == "other session":
        ids["session_id"] = "9876543210"
    elif change == "flipped byte":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    else:
        blob = blob[:10]
    with pytest.raises(SealError):
        open_sealed(recipient, sender_public, blob, **ids)


def test_key_pair_is_kept_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "s" / "silo.key"
    first = KeyPair.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyPair.load_or_create(path).public_bytes == first.public_bytes


def test_public_key_text_round_trips_and_rejects_garbage() -> None:
    pair = KeyPair.generate()
    text = pair.public_text
    assert len(text) == 43 and encode_public_key(decode_public_key(text)) == text
    with pytest.raises(SealError, match="32 bytes"):
        decode_public_key("abcd")
