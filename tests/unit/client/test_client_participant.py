"""The client against the real server (in a thread): credentials, rejoin, one exchange a round.

What the scripted endpoint of test_client_runtime.py cannot prove: the server's own join and
credential rules as the client meets them, and the reply carrying the next task.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from fedsilo.client.keys import KeyPair
from fedsilo.client.runtime import ClientRuntime
from fedsilo.errors import PermissionDenied
from fedsilo.http import ApiClient
from fedsilo.wire import SessionStatus


class CountingTransport(httpx.HTTPTransport):
    """Real HTTP; counts requests by (method, last path segment)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[str, str]] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls[(request.method, request.url.path.rsplit("/", 1)[-1])] += 1
        return super().handle_request(request)


@pytest.fixture
def api(thread_server: Any) -> Iterator[ApiClient]:
    with ApiClient(thread_server.url, thread_server.token) as client:
        yield client


@pytest.fixture
def table(tmp_path: Path) -> str:
    path = tmp_path / "silo.csv"
    pd.DataFrame({"a": np.arange(5.0), "b": np.ones(5)}).to_csv(path, index=False)
    return str(path)


def echo_session(api: ApiClient, clients: int, rounds: int) -> str:
    body = {
        "name": "echo",
        "package_name": "echo",
        "min_num_clients": clients,
        "num_rounds": rounds,
        "model_config": {"payload_size": 4},
        "data_config": {"columns": ["a"]},
    }
    sid: str = api.post_json("/sessions", body)["id"]
    api.post_json(f"/sessions/{sid}/start")
    return sid


def runtime(api: ApiClient, sid: str, name: str, table: str, state: Path) -> ClientRuntime:
    return ClientRuntime(api, sid, name, table, None, 8, poll_wait=5, state_dir=state,
                         on_event=lambda _: None)  # fmt: skip


def join(client: ClientRuntime) -> str:
    prepared = client.prepare(client.fetch_session())
    return client.join(prepared.summary).id


def run_in_thread(client: ClientRuntime, results: dict[str, Any]) -> threading.Thread:
    def target() -> None:
        try:
            results[client.client_name] = client.run()
        except Exception as exc:  # reported to the test thread
            results[client.client_name] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_restarted_client_rejoins_as_the_same_participant(
    api: ApiClient, table: str, tmp_path: Path
) -> None:
    sid = echo_session(api, clients=2, rounds=2)
    state = tmp_path / "silo-a-state"
    first = join(runtime(api, sid, "silo-a", table, state))
    credential = state / "keys" / sid / "silo-a.credential"
    assert credential.stat().st_mode & 0o777 == 0o600

    # the process restarts: same state dir, same participant, no new credential
    again = runtime(api, sid, "silo-a", table, state)
    assert join(again) == first
    assert again.participant is not None and again.participant.rejoined
    assert again.participant.credential is None

    # another machine (no state dir) cannot take the name over
    with pytest.raises(PermissionDenied, match="no credential for it is stored"):
        join(runtime(api, sid, "silo-a", table, tmp_path / "intruder"))

    results: dict[str, Any] = {}
    threads = [
        run_in_thread(runtime(api, sid, name, table, tmp_path / f"{name}-state"), results)
        for name in ("silo-a", "silo-b")
    ]
    for thread in threads:
        thread.join(timeout=60)
    assert results == {"silo-a": SessionStatus.completed, "silo-b": SessionStatus.completed}
    listed = api.get_json(f"/sessions/{sid}/participants")
    assert [p["client_name"] for p in listed] == ["silo-a", "silo-b"]
    key = KeyPair.load_or_create(state / "keys" / sid / "silo-a.key")
    assert listed[0]["id"] == first and listed[0]["public_key"] == key.public_text


def test_a_round_costs_one_exchange(thread_server: Any, table: str, tmp_path: Path) -> None:
    rounds = 5
    with ApiClient(thread_server.url, thread_server.token) as admin:
        sid = echo_session(admin, clients=1, rounds=rounds)
    transport = CountingTransport()
    with ApiClient(thread_server.url, thread_server.token, transport=transport) as api:
        status = runtime(api, sid, "solo", table, tmp_path / "state").run()
    assert status is SessionStatus.completed
    assert transport.calls[("POST", "reply")] == rounds
    # the first task comes from tasks/next; every later one, and the end, on a reply
    assert transport.calls[("GET", "next")] <= 2, transport.calls
