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


def _ephemeral_and_nonce(blob: bytes) -> tuple[bytes, bytes]:
    return blob[1:33], blob[33:45]


def test_nonces_never_repeat_under_one_key_even_from_many_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    alice, bob = KeyPair.generate(), KeyPair.generate()
    with ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(lambda _: seal(alice, bob.public_bytes, b"e", **IDS), range(400)))
    # one ephemeral key per sender, recipient and session (derived once), 400 distinct nonces
    assert len({_ephemeral_and_nonce(b)[0] for b in blobs}) == 1
    assert len({_ephemeral_and_nonce(b)[1] for b in blobs}) == 400
    assert {open_sealed(bob, alice.public_bytes, b, **IDS) for b in reversed(blobs)} == {b"e"}


def test_a_restarted_sender_seals_under_a_new_ephemeral_key(tmp_path: Path) -> None:
    # The counter starts again at 0 in a new process: the key under it must be new too.
    path = tmp_path / "silo.key"
    bob = KeyPair.generate()
    before = seal(KeyPair.load_or_create(path), bob.public_bytes, b"x", **IDS)
    after = seal(KeyPair.load_or_create(path), bob.public_bytes, b"x", **IDS)
    assert _ephemeral_and_nonce(before)[1] == _ephemeral_and_nonce(after)[1]
    assert _ephemeral_and_nonce(before)[0] != _ephemeral_and_nonce(after)[0]
    for blob in (before, after, before):
        assert open_sealed(bob, KeyPair.load_or_create(path).public_bytes, blob, **IDS) == b"x"


def test_each_recipient_and_session_gets_its_own_ephemeral_key() -> None:
    alice, bob, carol = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    to_bob = seal(alice, bob.public_bytes, b"x", **IDS)
    to_carol = seal(alice, carol.public_bytes, b"x", **IDS)
    other_session = seal(alice, bob.public_bytes, b"x", **{**IDS, "session_id": "9876543210"})
    assert len({_ephemeral_and_nonce(b)[0] for b in (to_bob, to_carol, other_session)}) == 3


def test_a_forged_payload_fails_after_genuine_ones_opened() -> None:
    # The recipient's cached key opens only what that sender sealed under that ephemeral key.
    alice, bob, mallory = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    genuine = seal(alice, bob.public_bytes, b"gradient", **IDS)
    assert open_sealed(bob, alice.public_bytes, genuine, **IDS) == b"gradient"
    forged = seal(mallory, bob.public_bytes, b"forged", **IDS)
    spliced = forged[:1] + genuine[1:33] + forged[33:]  # mallory's payload, alice's ephemeral
    for blob in (forged, spliced):
        with pytest.raises(SealError):
            open_sealed(bob, alice.public_bytes, blob, **IDS)
    with pytest.raises(SealError):  # the cached key is bound to the ids too
        open_sealed(bob, alice.public_bytes, genuine, **{**IDS, "recipient_id": "c3"})
