"""ClientContext: identity, peers from the session's listing, sealing between participants."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from fedsilo.client.connection import Connection
from fedsilo.client.context import ClientContext
from fedsilo.client.keys import KeyPair
from fedsilo.errors import SealError
from fedsilo.federation import Sealed
from fedsilo.http import ApiClient
from fedsilo.wire import API_PREFIX

SID = "0123456789"
NOW = datetime(2025, 1, 1, tzinfo=UTC).isoformat()
EMPTY = {"train_rows": 1, "test_rows": 0, "columns": []}


def contexts(tmp_path: Path) -> tuple[ClientContext, ClientContext]:
    pairs = {"pa": KeyPair.generate(), "pb": KeyPair.generate()}
    listing = [
        {
            "id": pid,
            "session_id": SID,
            "client_name": f"silo-{pid}",
            "dataset": EMPTY,
            "public_key": pair.public_text,
            "joined_at": NOW,
        }
        for pid, pair in pairs.items()
    ]

    def server(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"{API_PREFIX}/sessions/{SID}/participants"
        return httpx.Response(200, json=listing)

    made = []
    for pid, pair in pairs.items():
        api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(server))
        connection = Connection(api, SID, poll_wait=1, reconnect_timeout=0, emit=print)
        context = ClientContext(connection, f"silo-{pid}", pair, tmp_path / pid)
        with pytest.raises(RuntimeError, match="known once the client joined"):
            _ = context.participant_id
        connection.participant_id, connection.credential = pid, f"cred-{pid}"
        made.append(context)
    return made[0], made[1]


def test_peers_carry_decoded_public_keys(tmp_path: Path) -> None:
    a, b = contexts(tmp_path)
    peers = a.peers()
    assert [p.id for p in peers] == ["pa", "pb"]
    assert peers[1].public_key == b.keys.public_bytes
    assert (a.session_id, a.participant_id, a.client_name) == (SID, "pa", "silo-pa")
    assert a.state_dir == tmp_path / "pa" and a.state_dir.is_dir()
    assert not a.abort.is_set()


def test_sealed_to_a_peer_opens_only_there(tmp_path: Path) -> None:
    a, b = contexts(tmp_path)
    sealed = a.seal("pb", b"psi keys")
    assert sealed.sender == "pa" and b"psi keys" not in sealed.ciphertext
    assert b.open(sealed) == b"psi keys"
    with pytest.raises(SealError):
        a.open(sealed)  # sealed to pb, not to pa
    with pytest.raises(SealError):
        b.open(Sealed(sender="pb", ciphertext=sealed.ciphertext))  # a forged sender
    with pytest.raises(SealError, match="not a participant"):
        a.seal("pz", b"x")


def test_the_fast_exchange_is_made_on_first_use(tmp_path: Path) -> None:
    a, _ = contexts(tmp_path)
    exchange = a.exchange
    assert exchange is a.exchange
    assert type(exchange).__name__ == "HttpExchange"
