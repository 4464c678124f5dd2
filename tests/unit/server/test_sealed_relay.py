"""Sealed payloads through the real engine: a participant's sealed reply is forwarded to its
recipient byte for byte, and the plaintext never reaches the server's database or artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fedsilo.client.keys import decode_public_key, open_sealed, seal
from fedsilo.federation import SEALED_ARRAY, Task

MARKER = b"PLAINTEXT-MARKER-7f3a9c-never-on-the-server"


def test_a_sealed_reply_is_forwarded_unread_and_never_stored(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    def workflow(ctx: Any) -> None:
        a, b = ctx.wait_for_clients(2)
        [sealed_reply] = ctx.send([Task(to=a, kind="seal", meta={"peer": b.id}, round=1)]).wait()
        probe.seen["sealed"] = sealed_reply.sealed
        probe.seen["plain_arrays"] = sorted(sealed_reply.arrays)
        [opened] = ctx.send([Task(to=b, kind="open", sealed=sealed_reply.sealed, round=1)]).wait()
        probe.seen["opened"] = opened.meta
        # everything a session persists, with the ciphertext in memory all along
        ctx.record_round(1, {"loss": 0.0}, {b.client_name: {"opened": 1.0}})
        ctx.checkpoint(1, {"x": np.zeros(3)}, {"note": "after the sealed exchange"})
        ctx.save_model({"x": np.zeros(3)}, {"rounds": 1}, 1)
        ctx.log("sealed payload relayed")

    probe.workflow = workflow
    sid = helpers.create_session(api, package="probe", clients=2)
    a, b = silos(sid, "silo-a"), silos(sid, "silo-b")
    a.join(), b.join()
    plaintext = MARKER + bytes(range(256)) * 4

    # A seals to B's key, as the participants listing publishes it
    task_id, _, header = helpers.task_of(a.next())
    assert header.kind == "seal"
    listed = {p["id"]: p for p in api.get(f"/sessions/{sid}/participants").json()}
    peer_key = decode_public_key(listed[header.meta["peer"]]["public_key"])
    ciphertext = seal(a.key, peer_key, plaintext, session_id=sid, sender_id=a.id, recipient_id=b.id)
    assert MARKER not in ciphertext
    sealed = {SEALED_ARRAY: np.frombuffer(ciphertext, dtype=np.uint8)}
    assert a.reply(task_id, sealed, {"sealed_for": b.id}).status_code == 200

    # B gets the same bytes, names A as the sender, and alone can open them
    task_id, arrays, header = helpers.task_of(b.next())
    assert (header.kind, header.sealed_from) == ("open", a.id)
    assert list(arrays) == [SEALED_ARRAY]
    relayed = arrays[SEALED_ARRAY].tobytes()
    assert relayed == ciphertext
    opened = open_sealed(
        b.key, a.key.public_bytes, relayed, session_id=sid, sender_id=a.id, recipient_id=b.id
    )
    assert opened == plaintext
    assert b.reply(task_id, meta={"opened": True}).status_code == 200
    assert probe.done.wait(10)
    assert probe.seen["sealed"].sender == a.id
    assert probe.seen["sealed"].ciphertext == ciphertext
    assert probe.seen["plain_arrays"] == []  # the sealed array is not among the plain ones
    assert probe.seen["opened"] == {"opened": True}

    # nothing the server wrote holds the plaintext: database (and its WAL) and artifacts
    data_dir = Path(thread_server.settings.data_dir)
    written = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "fedsilo.db" for p in written)
    assert any(p.name == "checkpoint.safetensors" for p in written)
    assert any(p.name == "model.safetensors" for p in written)
    # the scan does see what the server stores (the log line, in the database or its WAL)
    assert any(b"sealed payload relayed" in p.read_bytes() for p in written)
    holding = [p for p in written if MARKER in p.read_bytes()]
    assert holding == []
