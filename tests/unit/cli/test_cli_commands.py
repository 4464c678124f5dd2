"""CLI commands against an in-process fake server (httpx.MockTransport); no real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsilo.cli.app import app
from fedsilo.http import ApiClient
from fedsilo.wire import (
    API_PREFIX,
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    TASK_ID_HEADER,
    TaskPayload,
    encode_frame,
)

runner = CliRunner()
SID = "0123456789"
NOW = datetime(2025, 1, 1, tzinfo=UTC).isoformat()
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records calls and answers from a route table."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]]):
        self.routes = routes
        self.calls: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path.removeprefix(API_PREFIX))
        self.calls.append(key)
        route = self.routes.get(key)
        if route is None:
            return httpx.Response(404, json={"detail": f"no route {key}"})
        return route(request)


def use_fake_server(monkeypatch: pytest.MonkeyPatch, module: str, handler: Handler) -> None:
    def open_api(url: str | None, token: str | None, ca_cert: str | None = None) -> ApiClient:
        return ApiClient("http://fake", token or "tok", transport=httpx.MockTransport(handler))

    monkeypatch.setattr(f"fedsilo.cli.{module}.open_api", open_api)
    # torch.set_num_threads would change the thread count of the whole test process
    monkeypatch.setattr("fedsilo.cli.client_options._set_threads", lambda threads: None)


@pytest.fixture(autouse=True)
def _own_client_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keys, credentials and released replies of one test stay in that test."""
    monkeypatch.setenv("FEDSILO_CLIENT_STATE_DIR", str(tmp_path / "client-state"))


def test_help_lists_command_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("client", "token", "user", "audit", "data", "server", "version"):
        assert group in result.stdout


def test_version() -> None:
    for args in (["--version"], ["version"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert result.stdout.startswith("fedsilo ")


def test_cli_import_does_not_load_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fedsilo.cli.app; "
        "print(','.join(m for m in ('torch', 'pandas', 'fsspec') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------- client train


def session_json(status: str = "running") -> dict[str, Any]:
    return {
        "id": SID,
        "name": "cli",
        "description": "",
        "kind": "hfl",
        "package_name": "echo",
        "min_num_clients": 1,
        "num_rounds": 1,
        "model_config": {},
        "data_config": {"columns": ["x1", "y"]},
        "status": status,
        "round": 0,
        "created_at": NOW,
        "updated_at": NOW,
    }


def client_server(polls: list[httpx.Response]) -> Recorder:
    """Protocol v2: the join returns a credential, every participant call presents it, and a
    reply's response is the next delivery (``polls`` serves tasks/next and replies alike)."""
    base = f"/sessions/{SID}/participants/p1/tasks"

    def join(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        answer = {"id": "p1", "session_id": SID, "joined_at": NOW, "credential": "cred", **body}
        return httpx.Response(201, json=answer)

    def delivery(request: httpx.Request) -> httpx.Response:
        if request.headers.get(PARTICIPANT_HEADER) != "cred":
            return httpx.Response(403, json={"detail": "credential"})
        return polls.pop(0)

    return Recorder(
        {
            ("GET", f"/sessions/{SID}"): lambda r: httpx.Response(200, json=session_json()),
            ("POST", f"/sessions/{SID}/participants"): join,
            ("GET", f"{base}/next"): delivery,
            ("POST", f"{base}/t1/reply"): delivery,
        }
    )


def train_args(train: Path, test: Path | None = None) -> list[str]:
    args = ["client", "train", "--session", SID, "--train-path", str(train)]
    if test is not None:
        args += ["--test-path", str(test)]
    return [*args, "--batch-size", "1024", "--client-name", "client-1", "--token", "t"]


def test_client_train_refuses_bad_data_listing_every_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    train = tmp_path / "train.csv"
    pd.DataFrame({"x1": ["a", None], "bad name": [1, 2]}).to_csv(train, index=False)
    test = tmp_path / "test.txt"
    test.write_text("x1,y\n1,2\n")
    server = client_server([])
    use_fake_server(monkeypatch, "client_options", server)

    result = runner.invoke(app, train_args(train, test))

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "Error: the local data cannot be used (5 problems):"
    problems = "\n".join(lines[1:])
    assert "missing required column(s) 'y'" in problems
    assert "column 'x1' is not numeric" in problems
    assert "column 'x1' has 1 null value(s)" in problems
    assert "column name 'bad name' is not allowed" in problems
    assert f"--test-path '{test}' has extension '.txt'" in problems
    assert all(line.startswith("  - ") for line in lines[1:])
    # refused before joining: the session was read, only the refusal was posted (this fake
    # server has no such route; tests/unit/server/test_refusals.py has the real one)
    assert server.calls == [("GET", f"/sessions/{SID}"), ("POST", f"/sessions/{SID}/refusals")]


def sample_data(tmp_path: Path) -> Path:
    train = tmp_path / "train.parquet"
    pd.DataFrame({"x1": [0.1, 0.2], "y": [0, 1]}).to_parquet(train)
    return train


def task_frame() -> httpx.Response:
    header = TaskPayload(kind="echo", round=1)
    return httpx.Response(
        200,
        content=encode_frame({"w": np.zeros(2, np.float32)}, header),
        headers={TASK_ID_HEADER: "t1", "content-type": OCTET_STREAM},
    )


def test_client_train_exits_0_when_the_session_completes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    polls = [
        httpx.Response(204),
        task_frame(),
        httpx.Response(410, json={"detail": "over", "status": "completed"}),
    ]
    server = client_server(polls)
    use_fake_server(monkeypatch, "client_options", server)

    result = runner.invoke(app, train_args(sample_data(tmp_path)))

    assert result.exit_code == 0, result.output
    assert f"joined session {SID} as client-1" in result.stdout
    assert "task t1 (echo, round 1) replied ok" in result.stdout
    assert f"session {SID} completed" in result.stdout
    assert ("POST", f"/sessions/{SID}/participants/p1/tasks/t1/reply") in server.calls


def test_client_join_takes_tables_by_role(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    polls = [task_frame(), httpx.Response(410, json={"detail": "over", "status": "completed"})]
    server = client_server(polls)
    use_fake_server(monkeypatch, "client_options", server)
    train = sample_data(tmp_path)
    args = ["client", "join", "--session", SID, "--table", f"train={train}"]
    args += ["--client-name", "client-1", "--token", "t"]

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    assert "task t1 (echo, round 1) replied ok" in result.stdout
    # one exchange per task: the reply's response carried the end of the session
    assert [c for c in server.calls if c[1].endswith("/next")] == [
        ("GET", f"/sessions/{SID}/participants/p1/tasks/next")
    ]

    result = runner.invoke(app, [*args[:5], "train", *args[6:]])
    assert result.exit_code == 2
    assert "expected ROLE=PATH" in result.output
    result = runner.invoke(app, [*args[:5], f"dataset={train}", *args[6:]])
    assert result.exit_code == 2, result.output
    assert "reads the tables train (required), test (optional); got dataset" in result.stderr


def test_client_train_reports_a_failed_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    polls = [httpx.Response(410, json={"detail": "over", "status": "failed", "reason": "boom"})]
    use_fake_server(monkeypatch, "client_options", client_server(polls))

    result = runner.invoke(app, [*train_args(sample_data(tmp_path)), "--quiet"])

    assert result.exit_code == 6
    assert result.stdout == ""
    assert result.stderr.strip() == f"Error: session {SID} is failed: boom"


# ------------------------------------------------------------------------------ tokens
# Token, user and audit commands run against a real server in test_cli_identity.py.


def test_token_create_checks_expiry() -> None:
    result = runner.invoke(app, ["token", "create", "--name", "ci", "--expires-in-days", "0"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: The --expires-in-days option must be > 0. Got 0."


# ------------------------------------------------------------------------- data, server


def test_data_synth_writes_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)
    assert files
    assert all(Path(path).is_file() for path in files.values())


def test_server_start_passes_only_given_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import fedsilo.server.app
    from fedsilo.server.settings import Settings

    started: list[Settings] = []
    monkeypatch.setattr(fedsilo.server.app, "serve", started.append)
    monkeypatch.setenv("FEDSILO_PORT", "9911")
    monkeypatch.setenv("FEDSILO_DATA_DIR", str(tmp_path / "from-env"))

    result = runner.invoke(
        app, ["server", "start", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    (settings,) = started
    assert settings.host == "0.0.0.0"
    assert settings.port == 9911  # from the environment, since --port was not given
    assert settings.data_dir == tmp_path  # the option wins over the environment
