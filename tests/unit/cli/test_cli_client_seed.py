"""``fedsilo client`` as the seed documents it, against the real server (in a thread).

The seed's tutorials start clients with ``--remove-after-complete``; its AWS Batch job
definition spells ``--session-id``, ``--instruction-polling-time`` and ``--log-interval``; its
release notes add ``iai client version`` and ``iai client log`` (to debug a failed session).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fedsilo
from fedsilo.cli.app import app

if TYPE_CHECKING:
    from conftest import ScopedTokens, ThreadServer

runner = CliRunner()


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This test's client state directory (keys, credentials, replies, logs)."""
    path = tmp_path / "client-state"
    monkeypatch.setenv("FEDSILO_CLIENT_STATE_DIR", str(path))
    # torch.set_num_threads would change the thread count of the whole test process
    monkeypatch.setattr("fedsilo.cli.client_options._set_threads", lambda threads: None)
    return path


@pytest.fixture
def client_token(thread_server: ThreadServer, scoped_tokens: ScopedTokens) -> str:
    return scoped_tokens.client(thread_server.url, thread_server.token, "silo0")


def _echo_session(thread_server: ThreadServer, rounds: int, columns: list[str]) -> str:
    with fedsilo.connect(thread_server.url, thread_server.token) as admin:
        session = admin.create_fl_session(
            name="seed cli",
            min_num_clients=1,
            num_rounds=rounds,
            package_name="echo",
            model_config={"payload_size": 4},
            data_config={"columns": columns},
        ).start()
        return session.id


def _tables(tmp_path: Path) -> tuple[Path, Path]:
    train, test = tmp_path / "train_silo0.parquet", tmp_path / "test.parquet"
    pd.DataFrame({"x0": np.arange(8.0), "y": np.ones(8)}).to_parquet(train)
    pd.DataFrame({"x0": np.arange(2.0), "y": np.ones(2)}).to_parquet(test)
    return train, test


def test_client_version() -> None:
    result = runner.invoke(app, ["client", "version"])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"fedsilo client {fedsilo.__version__}\n"


def test_the_batch_job_spellings_and_remove_after_complete(
    thread_server: ThreadServer, client_token: str, tmp_path: Path, state_dir: Path
) -> None:
    sid = _echo_session(thread_server, rounds=3, columns=["x0", "y"])
    train, test = _tables(tmp_path)

    # the seed's job definition (hfl train --token ... --session-id ...), with the tutorials'
    # --client-name and --remove-after-complete
    result = runner.invoke(
        app,
        [
            "client", "train", "--token", client_token, "--url", thread_server.url,
            "--session-id", sid, "--train-path", str(train), "--test-path", str(test),
            "--batch-size", "1024", "--instruction-polling-time", "2", "--log-interval", "600",
            "--client-name", "client-1", "--remove-after-complete",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"joined session {sid} as client-1" in result.stdout
    # --log-interval 600: the first per-task line is printed, the next ones only logged
    task_lines = [line for line in result.stdout.splitlines() if " received" in line or
                  " replied ok " in line]  # fmt: skip
    assert len(task_lines) == 1 and task_lines[0].endswith("received"), result.stdout
    assert "task line(s) not shown since" in result.stdout
    # --remove-after-complete: the participant's state is gone, its log stays
    assert not (state_dir / "keys" / sid).exists()
    assert not (state_dir / sid).exists()
    log = state_dir / "logs" / sid / "client-1.log"
    assert log.is_file()

    shown = runner.invoke(app, ["client", "log", "--session", sid])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == log.read_text()
    assert shown.stdout.count("replied ok") == 3  # every line is in the log
    assert f"session {sid} completed" in shown.stdout
    assert "removed the local state" in shown.stdout
    assert shown.stdout.splitlines()[0].endswith(
        f"client 'client-1' (fedsilo {fedsilo.__version__}) for session {sid} "
        f"on {thread_server.url}"
    )


def test_without_remove_after_complete_the_state_stays(
    thread_server: ThreadServer, client_token: str, tmp_path: Path, state_dir: Path
) -> None:
    sid = _echo_session(thread_server, rounds=1, columns=["x0"])
    train, _ = _tables(tmp_path)

    result = runner.invoke(
        app,
        [
            "client", "train", "--token", client_token, "--url", thread_server.url,
            "--session", sid, "--train-path", str(train), "--client-name", "client-1",
            "--poll-wait", "2",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.count("replied ok") == 1  # --log-interval 0: every line
    assert (state_dir / "keys" / sid / "client-1.credential").is_file()
    assert (state_dir / "keys" / sid / "client-1.key").is_file()


def test_client_log_shows_why_a_client_refused(
    thread_server: ThreadServer, client_token: str, tmp_path: Path
) -> None:
    sid = _echo_session(thread_server, rounds=1, columns=["x0", "x9"])
    train, _ = _tables(tmp_path)
    args = ["--token", client_token, "--url", thread_server.url, "--session-id", sid]

    refused = runner.invoke(
        app,
        ["client", "train", *args, "--train-path", str(train), "--client-name", "client-2"],
    )
    assert refused.exit_code == 2
    assert "missing required column(s) 'x9'" in refused.stderr

    shown = runner.invoke(app, ["client", "log", "--session-id", sid])
    assert shown.exit_code == 0, shown.output
    assert "refused the session; told the server: its data cannot be used" in shown.stdout
    assert "stopped: DataError: the local data cannot be used" in shown.stdout

    # two clients of the session on this machine: each log under its name
    again = runner.invoke(
        app,
        ["client", "train", *args, "--train-path", str(train), "--client-name", "client-3"],
    )
    assert again.exit_code == 2
    both = runner.invoke(app, ["client", "log", "--session", sid])
    assert both.stdout.startswith("== client-2 (")
    assert "\n== client-3 (" in both.stdout
    only = runner.invoke(app, ["client", "log", "--session", sid, "--client-name", "client-3"])
    assert not only.stdout.startswith("==") and "client 'client-3'" in only.stdout


def test_client_log_without_a_log_says_where_it_looked(state_dir: Path) -> None:
    result = runner.invoke(app, ["client", "log", "--session", "0123456789"])

    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: No client log of session 0123456789 in {state_dir}: a client writes one when "
        "it runs the session (fedsilo client train/eda/join) with this state directory "
        "($FEDSILO_CLIENT_STATE_DIR, else ~/.fedsilo/client).\n"
    )
    bad = runner.invoke(app, ["client", "log", "--session", "nope"])
    assert bad.exit_code == 2 and "10 lowercase hex characters" in bad.stderr


def test_help_lists_the_seed_spellings() -> None:
    result = runner.invoke(app, ["client", "train", "--help"], env={"COLUMNS": "200"})

    for option in (
        "--session-id",
        "--instruction-polling-time",
        "--log-interval",
        "--remove-after-complete",
    ):
        assert option in result.stdout
