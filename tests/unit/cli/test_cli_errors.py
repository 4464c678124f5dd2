"""CLI error reporting: one line (or one per data problem), the exit code, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsilo.cli.app import app
from fedsilo.cli.errors import exit_code_for, format_error
from fedsilo.errors import (
    APIError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    DataError,
    FedsiloError,
    NotFoundError,
    ServerUnavailable,
    SessionError,
    TaskError,
    ValidationError,
    WaitTimeout,
    WireError,
)

runner = CliRunner()
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (DataError(["a"]), 2),
        (ConfigError("bad"), 2),
        (AuthenticationError(401, "bad token"), 3),
        (NotFoundError(404, "no session"), 4),
        (ConflictError(409, "ended"), 5),
        (SessionError("0123456789", "failed", "why"), 6),
        (WaitTimeout("0123456789", "running", None), 6),
        (ServerUnavailable("down"), 7),
        (ValidationError(422, "bad body"), 1),
        (APIError(500, "boom"), 1),
        (WireError("bad frame"), 1),
        (TaskError("bad task"), 1),
        (FedsiloError("other"), 1),
        (RuntimeError("bug"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_format_error_lines() -> None:
    assert format_error(DataError(["only one\nproblem"], "x")) == ["Error: only one problem"]
    assert format_error(DataError(["p1", "p2"], "the local data")) == [
        "Error: the local data cannot be used (2 problems):",
        "  - p1",
        "  - p2",
    ]
    assert format_error(NotFoundError(404, "Session abc not found")) == [
        "Error: Session abc not found"
    ]
    assert format_error(APIError(500, "Internal Server Error")) == [
        "Error: server answered 500: Internal Server Error"
    ]
    detail = [{"loc": ["body", "name"], "msg": "String should have at least 1 character"}]
    assert format_error(ValidationError(422, detail)) == [
        "Error: name: String should have at least 1 character"
    ]
    assert format_error(SessionError("abc", "failed", "client-1 crashed")) == [
        "Error: session abc is failed: client-1 crashed"
    ]
    (line,) = format_error(ValueError("oops"))
    assert line.startswith("Error: unexpected ValueError: oops")


def assert_one_line_error(output: str, expected: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: "), output
    assert expected in lines[0]
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "args",
    [
        ["token", "list"],
        ["token", "create", "--name", "ci"],
        ["token", "revoke", "abc"],
    ],
)
def test_token_commands_against_unreachable_server(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--url", UNREACHABLE, "--token", "t"])
    assert result.exit_code == 7
    assert result.stdout == ""
    assert_one_line_error(result.stderr, f"cannot reach fedsilo server at {UNREACHABLE}")


def test_missing_token_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSILO_TOKEN", raising=False)
    result = runner.invoke(app, ["token", "list", "--url", UNREACHABLE])
    assert result.exit_code == 3
    assert_one_line_error(result.stderr, "No token given")


def test_client_train_bad_session_id() -> None:
    result = runner.invoke(
        app,
        [
            "client", "train", "--session", "nope", "--train-path", "a.csv",
            "--client-name", "c1", "--url", UNREACHABLE, "--token", "t",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "The session id must be 10 lowercase hex characters")


def test_unexpected_errors_are_one_line_unless_debugging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import fedsilo.data.synth

    def broken(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
        raise RuntimeError("synth broke")

    monkeypatch.setattr(fedsilo.data.synth, "write_sample_data", broken)
    monkeypatch.delenv("FEDSILO_DEBUG", raising=False)
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "unexpected RuntimeError: synth broke")

    monkeypatch.setenv("FEDSILO_DEBUG", "1")
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path)])
    assert isinstance(result.exception, RuntimeError)
