"""HttpExchange against the in-thread server: delivery, backpressure, timeouts, session end."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fedsilo.client.exchange import HttpExchange
from fedsilo.client.keys import KeyPair, open_sealed, seal
from fedsilo.errors import (
    APIError,
    NotFoundError,
    PermissionDenied,
    ServerUnavailable,
    SessionError,
    WaitTimeout,
)
from fedsilo.federation import FastExchange
from fedsilo.http import ApiClient
from fedsilo.server.engine.relay import MessageRelay


@pytest.fixture
def api(thread_server: Any) -> Iterator[ApiClient]:
    with ApiClient(thread_server.url, thread_server.token) as client:
        yield client


def join(api: ApiClient, sid: str, name: str, keys: KeyPair) -> tuple[str, str]:
    """Join through the real route; returns ``(participant id, credential)``."""
    body = {
        "client_name": name,
        "dataset": {"train_rows": 3, "test_rows": 0, "columns": [{"name": "a", "dtype": "f8"}]},
        "public_key": keys.public_text,
    }
    joined = api.post_json(f"/sessions/{sid}/participants", body)
    return joined["id"], joined["credential"]


class Peers:
    """A started echo session with participants alice and bob, each with its own connection."""

    def __init__(self, server: Any, api: ApiClient) -> None:
        body = {
            "name": "exchange",
            "package_name": "echo",
            "min_num_clients": 2,
            "num_rounds": 1,
            "model_config": {"payload_size": 1},
            "data_config": {"columns": ["a"]},
        }
        self.sid: str = api.post_json("/sessions", body)["id"]
        api.post_json(f"/sessions/{self.sid}/start")
        self.keys = {"alice": KeyPair.generate(), "bob": KeyPair.generate()}
        self.ids: dict[str, str] = {}
        self.credentials: dict[str, str] = {}
        self.apis: list[ApiClient] = []
        self.exchanges: list[HttpExchange] = []
        for name, keys in self.keys.items():
            self.ids[name], self.credentials[name] = join(api, self.sid, name, keys)
        self.server = server

    def exchange(self, name: str, **kwargs: Any) -> HttpExchange:
        own = ApiClient(self.server.url, self.server.token)
        self.apis.append(own)
        made = HttpExchange(own, self.sid, self.ids[name], self.credentials[name], **kwargs)
        self.exchanges.append(made)
        return made

    def close(self) -> None:
        for exchange in self.exchanges:
            exchange.close()
        for client in self.apis:
            client.close()


@pytest.fixture
def peers(thread_server: Any, api: ApiClient) -> Iterator[Peers]:
    made = Peers(thread_server, api)
    try:
        yield made
    finally:
        made.close()


def test_a_sealed_message_goes_there_and_back(peers: Peers) -> None:
    alice: FastExchange = peers.exchange("alice")
    bob: FastExchange = peers.exchange("bob")
    ids = peers.ids
    sealed = seal(
        peers.keys["alice"],
        peers.keys["bob"].public_bytes,
        b"embedding of batch 3",
        session_id=peers.sid,
        sender_id=ids["alice"],
        recipient_id=ids["bob"],
    )
    alice.send(ids["bob"], sealed, tag="embedding:3")
    sender, tag, payload = bob.receive(timeout=5)
    assert (sender, tag) == (ids["alice"], "embedding:3")
    opened = open_sealed(
        peers.keys["bob"],
        peers.keys["alice"].public_bytes,
        payload,
        session_id=peers.sid,
        sender_id=sender,
        recipient_id=ids["bob"],
    )
    assert opened == b"embedding of batch 3"
    bob.send(ids["alice"], b"gradient", tag="gradient:3")
    assert alice.receive(timeout=5) == (ids["bob"], "gradient:3", b"gradient")


def test_receive_past_its_timeout_raises_wait_timeout(peers: Peers) -> None:
    bob = peers.exchange("bob")
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="no fast-exchange message for participant"):
        bob.receive(timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3


def test_send_waits_out_a_full_mailbox(thread_server: Any, peers: Peers) -> None:
    thread_server.app_state.relay = MessageRelay(mailbox_messages=1, room_wait=0.05)
    alice, bob = peers.exchange("alice"), peers.exchange("bob")
    alice.send(peers.ids["bob"], b"first")
    done = threading.Event()

    def second() -> None:
        alice.send(peers.ids["bob"], b"second")  # answered 429 a few times, then 204
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.4)
    assert not done.is_set()
    assert bob.receive(timeout=5)[2] == b"first"
    thread.join(timeout=5)
    assert done.is_set()
    assert bob.receive(timeout=5)[2] == b"second"


def test_send_gives_up_on_a_mailbox_that_stays_full(thread_server: Any, peers: Peers) -> None:
    thread_server.app_state.relay = MessageRelay(mailbox_messages=1, room_wait=0.05)
    alice = peers.exchange("alice", full_timeout=0.3)
    alice.send(peers.ids["bob"], b"first")
    with pytest.raises(APIError, match="mailbox is full") as caught:
        alice.send(peers.ids["bob"], b"second")
    assert caught.value.status_code == 429


def test_errors_are_the_fedsilo_ones(peers: Peers) -> None:
    alice = peers.exchange("alice")
    with pytest.raises(NotFoundError, match="not found in session"):
        alice.send("0123456789abcdef", b"x")
    with pytest.raises(APIError) as caught:
        alice.send(peers.ids["bob"], bytes(16 * 2**20 + 1))
    assert caught.value.status_code == 413
    posing = HttpExchange(alice.api, peers.sid, peers.ids["bob"], peers.credentials["alice"])
    with pytest.raises(PermissionDenied):
        posing.receive(timeout=0)
    with pytest.raises(ValueError, match="ASCII"):
        alice.send(peers.ids["bob"], b"x", tag="épopée")


def test_the_end_of_the_session_ends_a_waiting_receive(peers: Peers, api: ApiClient) -> None:
    alice, bob = peers.exchange("alice"), peers.exchange("bob")
    raised: dict[str, BaseException] = {}

    def wait() -> None:
        try:
            bob.receive()
        except BaseException as exc:
            raised["bob"] = exc

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    api.post_json(f"/sessions/{peers.sid}/cancel")
    thread.join(timeout=5)
    assert isinstance(raised["bob"], SessionError)
    assert not isinstance(raised["bob"], WaitTimeout)
    assert raised["bob"].status == "canceled"
    with pytest.raises(SessionError, match="canceled"):
        alice.send(peers.ids["bob"], b"late")


def test_an_unreachable_server_is_server_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ApiClient(f"http://127.0.0.1:{port}", "fs_none", timeout=2) as closed:
        exchange = HttpExchange(closed, "0123456789", "p", "c")
        with pytest.raises(ServerUnavailable):
            exchange.send("q", b"x")
        with pytest.raises(ServerUnavailable):
            exchange.receive(timeout=0)


def test_parameters_are_checked() -> None:
    with ApiClient("http://127.0.0.1:9", "fs_none") as client:
        with pytest.raises(ValueError, match="'poll_wait' parameter must be > 0"):
            HttpExchange(client, "s", "p", "c", poll_wait=0)
        with pytest.raises(ValueError, match="'timeout' parameter must be >= 0"):
            HttpExchange(client, "s", "p", "c").receive(timeout=-1)


def test_send_and_receive_answers_with_the_peers_reply_in_one_request(peers: Peers) -> None:
    # Lock step (SplitNN): alice's embedding out and its gradient back, one request each way.
    alice, bob = peers.exchange("alice"), peers.exchange("bob")
    ids = peers.ids
    answered: list[tuple[str, str, bytes] | None] = []
    thread = threading.Thread(
        target=lambda: answered.append(
            alice.send_and_receive(ids["bob"], b"embedding 0", tag="embedding:0", wait=10)
        )
    )
    thread.start()
    assert bob.receive(timeout=5) == (ids["alice"], "embedding:0", b"embedding 0")
    # bob's answer reaches alice's pending request; bob's own wait then ends with nothing
    assert bob.send_and_receive(ids["alice"], b"gradient 0", tag="gradient:0", wait=0.3) is None
    thread.join(timeout=5)
    assert answered == [(ids["bob"], "gradient:0", b"gradient 0")]


def test_send_and_receive_without_an_answer_delivers_and_returns_none(peers: Peers) -> None:
    alice, bob = peers.exchange("alice"), peers.exchange("bob")
    started = time.monotonic()
    assert alice.send_and_receive(peers.ids["bob"], b"x", wait=0.3) is None
    assert 0.25 < time.monotonic() - started < 3
    assert bob.receive(timeout=5) == (peers.ids["alice"], "", b"x")
    with pytest.raises(ValueError, match="'wait'"):
        alice.send_and_receive(peers.ids["bob"], b"x", wait=0)


def test_send_and_receive_on_an_ended_session_is_session_error(
    peers: Peers, api: ApiClient
) -> None:
    alice = peers.exchange("alice")
    api.post_json(f"/sessions/{peers.sid}/cancel")
    with pytest.raises(SessionError):
        alice.send_and_receive(peers.ids["bob"], b"x", wait=5)
