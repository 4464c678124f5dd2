"""Sealed payloads through the real engine: a participant's sealed reply is forwarded to its
recipient byte for byte, and the plaintext never reaches the server's database or artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fedsilo.client.keys import decode_public_key, open_sealed, seal
from fedsilo.federation import SEALED_ARRAY, Task
from fedsilo.server.state import MEMORY_URL

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
    # the session's writes run behind its workflow; it is completed once they are written
    helpers.wait_until(
        lambda: api.get(f"/sessions/{sid}").json()["status"] == "completed",
        what="session completed",
    )

    # nothing the server stored holds the plaintext: database (and its WAL) or the memory
    # store's records, and artifacts
    stored = thread_server.stored()
    names = {Path(name).name for name in stored}
    assert "fedsilo.db" in names or MEMORY_URL in stored or "database-rows" in stored
    assert {"checkpoint.safetensors", "model.safetensors"} <= names
    # the scan does see what the server stores (the log line, in the database, WAL or records)
    assert any(b"sealed payload relayed" in content for content in stored.values())
    holding = [name for name, content in stored.items() if MARKER in content]
    assert holding == []
