"""Fixtures of the server tests: participants that speak raw HTTP, and a probe package whose
workflow is a function the test supplies (run by the real engine of the in-thread server)."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from fedsilo.client.keys import KeyPair
from fedsilo.federation import REGISTRY, DataConfigBase, ModelPackage, SessionContext
from fedsilo.wire import (
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    TASK_ID_HEADER,
    ReplyEnvelope,
    SessionKind,
    TaskPayload,
    decode_frame,
    encode_frame,
)

PROBE_MODULE = "fedsilo_test_probe_package"


class RawSilo:
    """One participant over raw httpx: join, poll, reply (nothing from fedsilo.client)."""

    def __init__(self, server: Any, sid: str, name: str, rows: int = 3) -> None:
        self.server = server
        self.sid = sid
        self.name = name
        self.rows = rows
        self.key = KeyPair.generate()
        self.id = ""
        self.credential = ""
        self.http = httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=30,
        )

    def join_body(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_name": self.name,
            "dataset": {
                "train_rows": self.rows,
                "test_rows": 0,
                "columns": [{"name": "a", "dtype": "float64"}],
            },
            "public_key": self.key.public_text,
        }
        body.update(changes)
        return body

    def join(self, credential: str | None = None, **changes: Any) -> httpx.Response:
        headers = {PARTICIPANT_HEADER: credential} if credential else {}
        response = self.http.post(
            f"/sessions/{self.sid}/participants", json=self.join_body(**changes), headers=headers
        )
        if response.status_code == 201:
            self.id = response.json()["id"]
            self.credential = response.json().get("credential") or self.credential
        return response

    @property
    def headers(self) -> dict[str, str]:
        return {PARTICIPANT_HEADER: self.credential}

    @property
    def tasks(self) -> str:
        return f"/sessions/{self.sid}/participants/{self.id}/tasks"

    def next(self, wait: float = 10) -> httpx.Response:
        return self.http.get(f"{self.tasks}/next", params={"wait": wait}, headers=self.headers)

    def reply(
        self,
        task_id: str,
        arrays: dict[str, np.ndarray] | None = None,
        meta: dict[str, Any] | None = None,
        *,
        body: bytes | None = None,
        wait: float | None = None,
        **envelope: Any,
    ) -> httpx.Response:
        content = (
            body
            if body is not None
            else encode_frame(arrays or {}, ReplyEnvelope(meta=meta or {}, **envelope))
        )
        params = {"wait": wait} if wait is not None else {}
        return self.http.post(
            f"{self.tasks}/{task_id}/reply",
            content=content,
            params=params,
            headers={**self.headers, "Content-Type": OCTET_STREAM},
        )

    def close(self) -> None:
        self.http.close()


def task_of(response: httpx.Response) -> tuple[str, dict[str, np.ndarray], TaskPayload]:
    """A 200 task frame as (task id, arrays, header)."""
    assert response.status_code == 200, response.text
    arrays, header = decode_frame(response.content)
    return response.headers[TASK_ID_HEADER], arrays, TaskPayload.model_validate(header)


class _ProbeModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class _ProbeData(DataConfigBase):
    model_config = ConfigDict(extra="allow")

    def required_columns(self) -> list[str]:
        return []


class Probe:
    """The probe package's workflow: ``probe.workflow = fn`` before the session starts."""

    def __init__(self) -> None:
        self.workflow: Callable[[SessionContext], None] = lambda ctx: None
        self.seen: dict[str, Any] = {}
        self.done = threading.Event()

    def run(self, ctx: SessionContext, model_config: Any, data_config: Any) -> None:
        try:
            self.workflow(ctx)
        finally:
            self.done.set()


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    """Registers package ``probe`` for the test; its workflow is ``probe.workflow``."""
    state = Probe()
    module = types.ModuleType(PROBE_MODULE)
    module.PACKAGE = ModelPackage(  # type: ignore[attr-defined]
        name="probe",
        description="test probe",
        kind=SessionKind.hfl,
        model_config_type=_ProbeModel,
        data_config_type=_ProbeData,
        workflow=state.run,
        executor_ref="fedsilo.packages.echo.client:EchoExecutor",
        export_ref="fedsilo.packages.echo.export:EchoModel",
    )
    monkeypatch.setitem(sys.modules, PROBE_MODULE, module)
    monkeypatch.setitem(REGISTRY, "probe", PROBE_MODULE)
    yield state


@pytest.fixture
def api(thread_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def silos(thread_server: Any) -> Iterator[Callable[..., RawSilo]]:
    """``silos(sid, name)`` makes a RawSilo (not yet joined); all are closed after the test."""
    made: list[RawSilo] = []

    def make(sid: str, name: str, rows: int = 3) -> RawSilo:
        silo = RawSilo(thread_server, sid, name, rows)
        made.append(silo)
        return silo

    yield make
    for silo in made:
        silo.close()


def create_session(
    api: httpx.Client, package: str = "echo", clients: int = 2, rounds: int = 1, **config: Any
) -> str:
    """A started session (pending until ``clients`` join)."""
    body = {
        "name": package,
        "package_name": package,
        "min_num_clients": clients,
        "num_rounds": rounds,
        "model_config": config,
        "data_config": {"columns": ["a"]} if package == "echo" else {},
    }
    response = api.post("/sessions", json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["id"]
    assert api.post(f"/sessions/{sid}/start").json()["status"] == "pending"
    return sid


def wait_until(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} not reached within {timeout} s")


@pytest.fixture
def helpers() -> types.SimpleNamespace:
    """Plain functions of this conftest, for tests (importlib mode cannot import conftest)."""
    return types.SimpleNamespace(
        create_session=create_session, task_of=task_of, wait_until=wait_until
    )
