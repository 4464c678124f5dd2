"""JSON log lines (``--log-format json`` / ``FEDSILO_LOG_FORMAT=json``, issue 11 item 7): one
object a line with time, level, logger, message, and session_id where known; and the
bootstrap admin token printed only to a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from fedsilo.server.auth import bootstrap_admin
from fedsilo.server.logs import JsonFormatter, configure_logging
from fedsilo.server.settings import Settings
from fedsilo.server.state import MemoryStore


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records go through the JSON formatter into a string buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fedsilo.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def parsed(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_time_level_logger_message(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_lines
    logger.warning("resumed %d active session(s)", 2)
    (entry,) = parsed(buffer)
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "fedsilo.test-logs"
    assert entry["message"] == "resumed 2 active session(s)"
    stamp = datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - stamp) < timedelta(seconds=5)


def test_session_id_from_extra_or_from_the_workflow_thread(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_lines
    logger.info("given", extra={"session_id": "abc123"})
    # The engine names each workflow thread session-<id>.
    worker = threading.Thread(target=logger.info, args=("from the workflow",), name="session-s42")
    worker.start()
    worker.join()
    logger.info("no session")
    entries = parsed(buffer)
    assert [e.get("session_id") for e in entries] == ["abc123", "s42", None]


def test_a_multiline_message_and_a_traceback_stay_on_one_line(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_lines
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("workflow crashed\nsecond line \x1b[31m")
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1
    (entry,) = parsed(buffer)
    assert entry["message"] == "workflow crashed\nsecond line \x1b[31m"
    assert "ValueError: boom" in str(entry["exception"])


def test_configure_logging_replaces_the_root_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging("info", "json")
        handler = configure_logging("info", "json")  # a second call: still one handler
        assert root.handlers == [handler]
        logging.getLogger("fedsilo.engine").warning("session s1 interrupted")
        (line,) = capsys.readouterr().err.splitlines()
        assert json.loads(line)["logger"] == "fedsilo.engine"
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_log_format_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSILO_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("FEDSILO_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


# -------------------------------------------------------- the bootstrap admin token


def test_a_generated_admin_token_is_never_printed_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    secret = bootstrap_admin(MemoryStore(), tmp_path, None, "fedsilo")
    assert secret is not None
    printed = capsys.readouterr()
    assert secret not in printed.err + printed.out + caplog.text
    assert f"admin token created in {tmp_path / 'admin_token'} (mode 0600)" in caplog.text
    assert (tmp_path / "admin_token").read_text() == secret + "\n"
    assert (tmp_path / "admin_token").stat().st_mode & 0o777 == 0o600


def test_a_generated_admin_token_is_shown_once_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, follower = os.openpty()  # a real terminal: isatty() is the kernel's answer
    terminal = os.fdopen(follower, "w")
    try:
        monkeypatch.setattr(sys, "stderr", terminal)
        secret = bootstrap_admin(MemoryStore(), tmp_path, None, "fedsilo")
        terminal.flush()
        shown = os.read(leader, 4096).decode()
    finally:
        terminal.close()
        os.close(leader)
    assert secret is not None and secret in shown
    assert str(tmp_path / "admin_token") in shown


def test_a_configured_admin_token_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert bootstrap_admin(MemoryStore(), tmp_path, "fs_configured", "fedsilo") == "fs_configured"
    printed = capsys.readouterr()
    assert "fs_configured" not in printed.err + printed.out + caplog.text
