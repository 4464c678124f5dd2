"""Share records: a fixed JSON layout, parsed strictly; they travel sealed (real crypto)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fedsilo.client.keys import KeyPair, open_sealed, seal
from fedsilo.errors import SealError
from fedsilo.privacy.secagg import ShareError
from fedsilo.privacy.secagg.records import (
    ShareRecord,
    UnmaskShare,
    b64encode,
    keys_digest,
    seed_digest,
)

RECORD = ShareRecord(
    session="s",
    round=2,
    owner="alice",
    holder="bob",
    threshold=2,
    keys_digest=b64encode(bytes(32)),
    index=2,
    self_seed_share=b64encode(bytes(66)),
    mask_key_share=b64encode(b"\x01" * 66),
    self_seed_digest=b64encode(b"\x02" * 32),
)


def test_record_round_trip_and_layout() -> None:
    raw = RECORD.to_bytes()
    assert ShareRecord.from_bytes(raw) == RECORD
    body = json.loads(raw)
    assert sorted(body) == sorted(
        [
            "version",
            "session",
            "round",
            "owner",
            "holder",
            "threshold",
            "keys_digest",
            "index",
            "self_seed_share",
            "mask_key_share",
            "self_seed_digest",
        ]
    )
    assert body["version"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(extra=1), "unexpected \\['extra'\\]"),
        (lambda b: b.pop("index"), "Missing \\['index'\\]"),
        (lambda b: b.update(version=2), "version must be 1"),
        (lambda b: b.update(round="2"), "'round' field must be an integer"),
        (lambda b: b.update(index=True), "'index' field must be an integer"),
        (lambda b: b.update(owner=3), "'owner' field of a share record must be a string"),
        (lambda b: b.update(self_seed_share=b64encode(bytes(65))), "hold 66 bytes. Got 65"),
        (lambda b: b.update(keys_digest="***"), "url-safe base64"),
    ],
)
def test_malformed_records_are_refused(change: object, message: str) -> None:
    body = json.loads(RECORD.to_bytes())
    change(body)  # type: ignore[operator]
    with pytest.raises(ShareError, match=message):
        ShareRecord.from_bytes(json.dumps(body).encode())


def test_not_json_is_refused() -> None:
    for raw in (b"\x80\x04\x95", b"[1, 2]", b"{"):
        with pytest.raises(ShareError, match="share record must be"):
            ShareRecord.from_bytes(raw)


def test_unmask_share_round_trip_and_strictness() -> None:
    share = UnmaskShare("self_seed", 3, b"\x05" * 66, b64encode(bytes(32)))
    assert UnmaskShare.from_json(share.to_json(), "h", "o") == share
    key_share = UnmaskShare("mask_key", 3, b"\x05" * 66)
    assert "digest" not in key_share.to_json()
    assert UnmaskShare.from_json(key_share.to_json(), "h", "o") == key_share
    with pytest.raises(ShareError, match="holder 'h''s share of 'o' must have keys"):
        UnmaskShare.from_json({**key_share.to_json(), "secret": "both"}, "h", "o")


def test_digests_bind_round_and_owner() -> None:
    keys = {"a": b64encode(bytes(32)), "b": b64encode(b"\x01" * 32)}
    assert keys_digest("s", 1, keys) == keys_digest("s", 1, dict(reversed(keys.items())))
    assert keys_digest("s", 1, keys) != keys_digest("s", 2, keys)
    assert keys_digest("s", 1, keys) != keys_digest("s", 1, {**keys, "b": keys["a"]})
    assert seed_digest("s", 1, "a", bytes(32)) != seed_digest("s", 1, "b", bytes(32))


def test_a_record_travels_sealed_to_its_holder_only() -> None:
    alice, bob, mallory = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    ids = {"session_id": "s", "sender_id": "alice", "recipient_id": "bob"}
    sealed = seal(alice, bob.public_bytes, RECORD.to_bytes(), **ids)
    assert RECORD.self_seed_share.encode() not in sealed
    opened = open_sealed(bob, alice.public_bytes, sealed, **ids)
    assert ShareRecord.from_bytes(opened) == RECORD
    with pytest.raises(SealError):
        open_sealed(mallory, alice.public_bytes, sealed, **ids)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealError):
        open_sealed(bob, alice.public_bytes, tampered, **ids)
    assert replace(RECORD, index=3) != RECORD
