"""The fast exchange's routes over real HTTP: delivery, credentials, bounds, session end.

Messages are relayed by the in-thread server (tests/conftest.py); participants join with the
real join route. Bounds are lowered by giving the app a relay with small limits.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedsilo.client.keys import KeyPair
from fedsilo.server.engine.relay import MAX_MESSAGE_BYTES, MessageRelay, RelayMessage
from fedsilo.server.state import MEMORY_URL
from fedsilo.wire import OCTET_STREAM, PARTICIPANT_HEADER, SENDER_HEADER, TAG_HEADER


@pytest.fixture
def api(thread_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=30,
    ) as client:
        yield client


def echo_session(api: httpx.Client, *, start: bool = True, clients: int = 2) -> str:
    body = {
        "name": "relay",
        "package_name": "echo",
        "min_num_clients": clients,
        "num_rounds": 1,
        "model_config": {"payload_size": 1},
        "data_config": {"columns": ["a"]},
    }
    response = api.post("/sessions", json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["id"]
    if start:
        assert api.post(f"/sessions/{sid}/start").status_code == 200
    return sid


def join(api: httpx.Client, sid: str, name: str) -> tuple[str, str]:
    """Join through the real route; returns ``(participant id, credential)``."""
    body = {
        "client_name": name,
        "dataset": {"train_rows": 3, "test_rows": 0, "columns": [{"name": "a", "dtype": "f8"}]},
        "public_key": KeyPair.generate().public_text,
    }
    response = api.post(f"/sessions/{sid}/participants", json=body)
    assert response.status_code == 201, response.text
    joined = response.json()
    return joined["id"], joined["credential"]


@pytest.fixture
def pair(api: httpx.Client, thread_server: Any) -> tuple[str, tuple[str, str], tuple[str, str]]:
    """A started session whose two participants joined (the workflow is running)."""
    sid = echo_session(api)
    return sid, join(api, sid, "alice"), join(api, sid, "bob")


def post(
    api: httpx.Client, sid: str, sender: tuple[str, str], to: str, body: bytes, tag: str = ""
) -> httpx.Response:
    headers = {PARTICIPANT_HEADER: sender[1], "Content-Type": OCTET_STREAM}
    if tag:
        headers[TAG_HEADER] = tag
    return api.post(
        f"/sessions/{sid}/participants/{sender[0]}/relay/{to}", content=body, headers=headers
    )


def get(api: httpx.Client, sid: str, who: tuple[str, str], wait: float = 5) -> httpx.Response:
    return api.get(
        f"/sessions/{sid}/participants/{who[0]}/relay",
        params={"wait": wait},
        headers={PARTICIPANT_HEADER: who[1]},
    )


def test_a_message_reaches_its_recipient_with_sender_and_tag_in_order(
    api: httpx.Client, pair: Any
) -> None:
    sid, alice, bob = pair
    for i in range(3):
        assert post(api, sid, alice, bob[0], b"m%d" % i, tag=f"embedding:1:{i}").status_code == 204
    for i in range(3):
        response = get(api, sid, bob)
        assert response.status_code == 200
        assert response.content == b"m%d" % i
        assert response.headers[SENDER_HEADER] == alice[0]
        assert response.headers[TAG_HEADER] == f"embedding:1:{i}"
        assert response.headers["content-type"] == OCTET_STREAM
    assert get(api, sid, alice, wait=0).status_code == 204  # nothing went to the sender


def test_a_waiting_long_poll_answers_as_soon_as_the_message_arrives(
    api: httpx.Client, thread_server: Any, pair: Any
) -> None:
    sid, alice, bob = pair
    got: dict[str, Any] = {}

    def poll() -> None:
        with httpx.Client(
            base_url=thread_server.url + "/api/v1",
            headers={"Authorization": f"Bearer {thread_server.token}"},
        ) as own:
            got["response"] = get(own, sid, bob, wait=10)
            got["at"] = time.monotonic()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)  # the long-poll is waiting on the server
    sent_at = time.monotonic()
    assert post(api, sid, alice, bob[0], b"now").status_code == 204
    thread.join(timeout=10)
    assert got["response"].content == b"now"
    assert got["at"] - sent_at < 0.2


def test_a_send_with_wait_answers_with_the_callers_next_message(
    api: httpx.Client, pair: Any
) -> None:
    # Lock step in one request: queue for bob, then wait for alice's own oldest message.
    sid, alice, bob = pair
    assert post(api, sid, bob, alice[0], b"gradient 0", tag="gradient:1:0").status_code == 204
    headers = {PARTICIPANT_HEADER: alice[1], "Content-Type": OCTET_STREAM}
    path = f"/sessions/{sid}/participants/{alice[0]}/relay/{bob[0]}"
    answered = api.post(path, content=b"embedding 1", headers=headers, params={"wait": 5})
    assert answered.status_code == 200
    assert answered.content == b"gradient 0"
    assert answered.headers[SENDER_HEADER] == bob[0]
    assert answered.headers[TAG_HEADER] == "gradient:1:0"
    started = time.monotonic()
    nothing = api.post(path, content=b"embedding 2", headers=headers, params={"wait": 0.3})
    assert nothing.status_code == 204 and 0.25 < time.monotonic() - started < 3
    # both sends were queued, whatever came back
    assert [get(api, sid, bob).content for _ in range(2)] == [b"embedding 1", b"embedding 2"]
    refused = api.post(path, content=b"x", headers=headers, params={"wait": -1})
    assert refused.status_code == 422


def test_no_message_within_wait_is_204(api: httpx.Client, pair: Any) -> None:
    sid, _, bob = pair
    started = time.monotonic()
    assert get(api, sid, bob, wait=0.3).status_code == 204
    assert 0.25 < time.monotonic() - started < 2


def test_a_message_is_kept_for_the_next_poll_when_the_waiting_one_gave_up(
    api: httpx.Client, thread_server: Any, pair: Any
) -> None:
    sid, alice, bob = pair
    with (
        httpx.Client(
            base_url=thread_server.url + "/api/v1",
            headers={"Authorization": f"Bearer {thread_server.token}"},
            timeout=0.3,
        ) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        get(impatient, sid, bob, wait=10)  # the client closes the connection at 0.3 s
    time.sleep(0.1)
    assert post(api, sid, alice, bob[0], b"kept").status_code == 204
    assert get(api, sid, bob).content == b"kept"


def test_a_created_session_relays_too(api: httpx.Client, thread_server: Any) -> None:
    sid = echo_session(api, start=False)
    alice, bob = join(api, sid, "alice"), join(api, sid, "bob")
    assert post(api, sid, bob, alice[0], b"hi").status_code == 204
    assert get(api, sid, alice).content == b"hi"


def test_another_participants_credential_is_403(api: httpx.Client, pair: Any) -> None:
    sid, alice, bob = pair
    posing = (alice[0], bob[1])  # alice's id with bob's credential
    response = post(api, sid, posing, bob[0], b"x")
    assert response.status_code == 403
    assert "does not belong to participant" in response.json()["detail"]
    assert get(api, sid, (bob[0], "fp_wrong")).status_code == 403
    no_header = api.get(f"/sessions/{sid}/participants/{bob[0]}/relay", params={"wait": 0})
    assert no_header.status_code == 403


def test_a_recipient_outside_the_session_is_404(
    api: httpx.Client, thread_server: Any, pair: Any
) -> None:
    sid, alice, _ = pair
    other_sid = echo_session(api, start=False)
    stranger, _ = join(api, other_sid, "carol")
    for to in ("0123456789abcdef", stranger):
        response = post(api, sid, alice, to, b"x")
        assert response.status_code == 404
        assert response.json()["detail"] == f"Participant {to} not found in session {sid}."


def test_a_malformed_tag_is_422(api: httpx.Client, pair: Any) -> None:
    sid, alice, bob = pair
    response = post(api, sid, alice, bob[0], b"x", tag="has space")
    assert response.status_code == 422
    assert TAG_HEADER in response.json()["detail"]


def test_an_oversize_message_is_413(api: httpx.Client, pair: Any) -> None:
    sid, alice, bob = pair
    response = post(api, sid, alice, bob[0], bytes(MAX_MESSAGE_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"A fast-exchange message is at most {MAX_MESSAGE_BYTES} bytes. Got "
        f"{MAX_MESSAGE_BYTES + 1} bytes; split it, or send it as a task."
    )
    # The connection stays usable and a message at the limit goes through.
    assert post(api, sid, alice, bob[0], bytes(MAX_MESSAGE_BYTES)).status_code == 204
    assert len(get(api, sid, bob).content) == MAX_MESSAGE_BYTES


def test_a_full_mailbox_is_429_until_the_recipient_drains_it(
    api: httpx.Client, thread_server: Any, pair: Any
) -> None:
    thread_server.app_state.relay = MessageRelay(mailbox_messages=2, room_wait=0.2)
    sid, alice, bob = pair
    assert post(api, sid, alice, bob[0], b"1").status_code == 204
    assert post(api, sid, alice, bob[0], b"2").status_code == 204
    started = time.monotonic()
    full = post(api, sid, alice, bob[0], b"3")
    assert full.status_code == 429
    assert time.monotonic() - started >= 0.2  # the sender waited for room first
    assert full.json()["detail"].startswith("The recipient's fast-exchange mailbox is full")
    assert get(api, sid, bob).content == b"1"
    assert post(api, sid, alice, bob[0], b"3").status_code == 204
    assert [get(api, sid, bob).content for _ in range(2)] == [b"2", b"3"]


def test_a_blocked_sender_goes_through_when_room_appears(
    api: httpx.Client, thread_server: Any, pair: Any
) -> None:
    thread_server.app_state.relay = MessageRelay(mailbox_bytes=10, room_wait=5)
    sid, alice, bob = pair
    assert post(api, sid, alice, bob[0], bytes(8)).status_code == 204
    result: dict[str, Any] = {}

    def blocked() -> None:
        with httpx.Client(
            base_url=thread_server.url + "/api/v1",
            headers={"Authorization": f"Bearer {thread_server.token}"},
        ) as own:
            result["response"] = post(own, sid, alice, bob[0], bytes(8))

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.3)
    assert "response" not in result  # waiting for room (backpressure), not refused
    assert len(get(api, sid, bob).content) == 8
    thread.join(timeout=5)
    assert result["response"].status_code == 204


def test_after_the_session_ends_relay_calls_are_410_and_messages_are_dropped(
    api: httpx.Client, thread_server: Any, pair: Any
) -> None:
    sid, alice, bob = pair
    assert post(api, sid, alice, bob[0], b"left behind").status_code == 204
    relay: MessageRelay = thread_server.app_state.relay
    assert relay.held(sid) == (1, len(b"left behind"))
    got: dict[str, httpx.Response] = {}

    def poll() -> None:  # alice waits for a message that never comes
        with httpx.Client(
            base_url=thread_server.url + "/api/v1",
            headers={"Authorization": f"Bearer {thread_server.token}"},
        ) as own:
            got["alice"] = get(own, sid, alice, wait=20)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.2)
    assert api.post(f"/sessions/{sid}/cancel").status_code == 200
    thread.join(timeout=5)
    assert got["alice"].status_code == 410  # woken within the end check, not at wait's end
    assert got["alice"].json()["status"] == "canceled"
    for response in (get(api, sid, bob), post(api, sid, alice, bob[0], b"late")):
        assert response.status_code == 410
        assert response.json()["detail"] == f"Session {sid} is canceled."
    assert relay.held(sid) == (0, 0)


def test_nothing_relayed_reaches_the_database_or_the_artifact_store(
    api: httpx.Client, thread_server: Any, pair: Any
) -> None:
    sid, alice, bob = pair
    delivered = b"delivered-" + secrets.token_hex(16).encode()
    held = b"held-" + secrets.token_hex(16).encode()
    assert post(api, sid, alice, bob[0], delivered, tag="t1").status_code == 204
    assert get(api, sid, bob).content == delivered
    assert post(api, sid, bob, alice[0], held, tag="t2").status_code == 204
    stored = thread_server.stored()
    # the db (and its WAL), or the memory store's records, are among what is scanned
    assert (
        MEMORY_URL in stored
        or "database-rows" in stored
        or any(Path(name).name.startswith("fedsilo.db") for name in stored)
    )
    for name, content in stored.items():
        assert delivered not in content and held not in content, name


# ------------------------------------------------------------- the relay itself


def test_relay_bounds_and_drop_without_http() -> None:
    async def scenario() -> None:
        relay = MessageRelay(mailbox_messages=2, mailbox_bytes=100, relay_bytes=150)
        message = RelayMessage(sender="a", tag="", payload=bytes(60))
        assert await relay.put("s", "b", message, wait=0)
        assert not await relay.put("s", "b", message, wait=0)  # mailbox bytes
        assert await relay.put("s", "c", message, wait=0)
        assert not await relay.put("s", "d", message, wait=0)  # relay bytes
        assert relay.held() == (2, 120)
        waiter = asyncio.create_task(relay.take("s", "e", wait=10))
        await asyncio.sleep(0.01)
        assert relay.drop_session("s") == 2
        assert await waiter is None  # woken by the drop, not at the end of its wait
        assert relay.held() == (0, 0)
        assert await relay.put("s", "b", message, wait=0)
        await asyncio.to_thread(relay.drop_session_threadsafe, "s")  # as an engine thread
        await asyncio.sleep(0.01)
        assert relay.held() == (0, 0)
        with pytest.raises(ValueError, match="at most"):
            await relay.put("s", "b", RelayMessage("a", "", bytes(16 * 2**20 + 1)), wait=0)

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))
