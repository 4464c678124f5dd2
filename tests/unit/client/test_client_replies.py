"""A restarted client answers a repeated question with the reply it already released."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from fedsilo.client.replies import ReplyStore, question_digest


def test_the_same_question_gets_the_stored_reply(tmp_path: Path) -> None:
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    digest = question_digest("fit", 3, {"round": 3}, arrays)
    store = ReplyStore(tmp_path, "0123456789", "silo-a")
    assert store.get("fit", digest) is None
    store.put("fit", digest, b"first answer")
    # a new store object: what a restarted client process would build
    again = ReplyStore(tmp_path, "0123456789", "silo-a")
    assert again.get("fit", digest) == b"first answer"


def test_a_different_question_is_not_answered_from_the_store(tmp_path: Path) -> None:
    arrays = {"w": np.zeros(3, dtype=np.float32)}
    store = ReplyStore(tmp_path, "0123456789", "silo-a")
    store.put("fit", question_digest("fit", 3, {}, arrays), b"answer")
    changed = {"w": np.ones(3, dtype=np.float32)}
    assert store.get("fit", question_digest("fit", 3, {}, changed)) is None
    assert store.get("fit", question_digest("fit", 4, {}, arrays)) is None
    assert store.get("fit", question_digest("fit", 3, {"lr": 1}, arrays)) is None
    other_client = ReplyStore(tmp_path, "0123456789", "silo-b")
    assert other_client.get("fit", question_digest("fit", 3, {}, arrays)) is None


def test_digest_covers_dtype_and_shape() -> None:
    flat = {"w": np.zeros(4, dtype=np.float32)}
    square = {"w": np.zeros((2, 2), dtype=np.float32)}
    wide = {"w": np.zeros(4, dtype=np.float64)}
    digests = {question_digest("fit", 1, {}, a) for a in (flat, square, wide)}
    assert len(digests) == 3


def test_a_torn_record_reads_as_absent(tmp_path: Path) -> None:
    store = ReplyStore(tmp_path, "0123456789", "silo-a")
    digest = question_digest("fit", 1, {}, {})
    store.put("fit", digest, b"a reply frame of some length")
    store.put("fit", digest, b"shorter")  # written over in place, the tail cut off
    assert store.get("fit", digest) == b"shorter"
    store.close()
    path = store.folder / "fit.reply"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    path.write_bytes(data[:-2])  # a crash in the middle of the write
    assert ReplyStore(tmp_path, "0123456789", "silo-a").get("fit", digest) is None
    path.write_bytes(data[:-1] + b"X")  # or a damaged byte
    assert ReplyStore(tmp_path, "0123456789", "silo-a").get("fit", digest) is None
