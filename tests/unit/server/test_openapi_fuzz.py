"""The OpenAPI is the contract: schemathesis fuzzes every operation of the real server.

The server is the real app under uvicorn in a thread (a SQLite state store), reached over
real HTTP with an admin token so that every route is entered past its access check. Each
operation gets a few generated requests, valid and invalid; schemathesis's checks fail the
test on any 5xx, a status the operation does not declare, a body or header that does not
match its declared schema, a 2xx to input the schema forbids, and a 405 without ``Allow``.

Bounded to stay well under two minutes on two cores: :data:`EXAMPLES` examples per
operation, no deadline (the shared machine's timing is not the API's).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fedsilo.server.app import create_app
from fedsilo.server.settings import Settings

ADMIN_TOKEN = "fs_fuzz-admin-token"
#: generated requests per operation (and per generation mode)
EXAMPLES = 15


@dataclass
class FuzzServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread
    session_id: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    port = _free_port()
    app_settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("fuzz")) / "server",
        port=port,
        admin_token=ADMIN_TOKEN,
        task_timeout=5,
        # A generated `wait` holds a long-poll open at most this long.
        max_long_poll=0.2,
    )
    app = create_app(app_settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "fuzz server did not start"
        time.sleep(0.01)
    # Requests without a token (schemathesis checks that auth is enforced) must not lock
    # the admin token out for the rest of the run.
    app.state.auth_limiter.limit = 10**9
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as http:
        body = {
            "name": "fuzz",
            "package_name": "echo",
            "min_num_clients": 1,
            "num_rounds": 1,
            "model_config": {},
            "data_config": {"columns": ["a"]},
        }
        created = http.post("/sessions", json=body)
        assert created.status_code == 201, created.text
    try:
        yield FuzzServer(url, server, thread, created.json()["id"])
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _openapi() -> dict[str, Any]:
    """The app's own OpenAPI document (building the app opens nothing)."""
    document: dict[str, Any] = create_app(Settings(admin_token=ADMIN_TOKEN)).openapi()
    return document


# Loaded when the module is collected, from the app itself; the requests go to the server.
schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # the same examples every run, and no .hypothesis/ folder left in the checkout
    derandomize=True,
    database=None,
)
def test_every_operation_keeps_its_contract(
    case: schemathesis.Case, fuzz_server: FuzzServer
) -> None:
    case.call_and_validate(
        base_url=fuzz_server.url,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        # Schema-valid input may still be refused with 422 for what no JSON Schema says: a
        # package's own config rules, a scoped token's 30-day lifetime, the columns a
        # session requires. Every other check runs, negative_data_rejection included.
        excluded_checks=[positive_data_acceptance],
        timeout=10,
    )
