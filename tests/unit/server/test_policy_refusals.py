"""The data owner's policy through the real server (in a thread) and real clients.

A client whose policy requires secure aggregation refuses a plain session before joining
(``fedsilo client train --policy``: one line, exit 2; the server's status reason and log say
which rule); one whose table is below the default ``min_rows`` (attributes + 5) refuses
likewise (the policy from ``$FEDSILO_CLIENT_POLICY``); and mid-session, an ffnet client
balancing its classes down to fewer rows than ``min_rows`` fails its fit naming the rule,
while the session goes on with the other client -- also under secure aggregation, where the
release check sits inside the masking. An eda column with fewer non-null values than
``min_rows`` is refused before joining. Nothing the server stored holds the refusing silo's
path or a value of its table.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fedsilo
from fedsilo.cli.app import app
from fedsilo.client.policy import DataOwnerPolicy, PolicyRefusal
from fedsilo.client.runtime import ClientRuntime
from fedsilo.http import ApiClient
from fedsilo.wire import API_PREFIX, SessionStatus

if TYPE_CHECKING:
    from conftest import ScopedTokens, ThreadServer

runner = CliRunner()
# A value no message may carry: it is in the refusing client's table only.
SECRET_VALUE = 987654.25
POLICY = "the data owner's policy refuses the session: rule"


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "client-state"
    monkeypatch.setenv("FEDSILO_CLIENT_STATE_DIR", str(path))
    monkeypatch.delenv("FEDSILO_CLIENT_POLICY", raising=False)
    # torch.set_num_threads would change the thread count of the whole test process
    monkeypatch.setattr("fedsilo.cli.client_options._set_threads", lambda threads: None)
    return path


@pytest.fixture
def tokens(thread_server: ThreadServer, scoped_tokens: ScopedTokens) -> dict[str, str]:
    url, admin = thread_server.url, thread_server.token
    return {
        "analyst": scoped_tokens.analyst(url, admin),
        "silo-a": scoped_tokens.client(url, admin, "silo-a"),
        "silo-b": scoped_tokens.client(url, admin, "silo-b"),
    }


def _echo(analyst: fedsilo.Client) -> fedsilo.Session:
    return analyst.create_fl_session(
        name="policy",
        min_num_clients=1,
        num_rounds=1,
        package_name="echo",
        model_config={"payload_size": 4},
        data_config={"columns": ["a", "y"]},
    ).start()


def _train(thread_server: ThreadServer, token: str, sid: str, table: Path, *extra: str) -> Any:
    return runner.invoke(
        app,
        [
            "client", "train", "--token", token, "--url", thread_server.url, "--session", sid,
            "--train-path", str(table), "--client-name", "silo-b", "--poll-wait", "1", *extra,
        ],
    )  # fmt: skip


def _cancel(thread_server: ThreadServer, sid: str) -> None:
    # The analyst's least-privilege token cannot cancel; an admin ends the session.
    with fedsilo.connect(thread_server.url, thread_server.token) as admin:
        admin.fl_session(sid).cancel()


def _assert_nothing_of_the_silo_stored(thread_server: ThreadServer, folder: Path) -> None:
    for where, content in thread_server.stored().items():
        assert str(folder).encode() not in content, where
        assert str(SECRET_VALUE).encode() not in content, where


def test_require_secure_aggregation_refuses_a_plain_session(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    table = tmp_path / "silo-b.csv"
    pd.DataFrame({"a": [SECRET_VALUE, *range(19)], "y": np.ones(20)}).to_csv(table, index=False)
    policy = tmp_path / "policy.toml"
    policy.write_text("require_secure_aggregation = true\n")
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = _echo(analyst)
        result = _train(thread_server, tokens["silo-b"], session.id, table, "--policy", str(policy))

        why = (
            f"{POLICY} 'require_secure_aggregation': the session's model_config has no enabled "
            "secure_aggregation, so the server would see this silo's individual contributions"
        )
        # the operator: one line, exit 2
        assert result.exit_code == 2, result.output
        assert result.stderr == f"Error: {why}\n"
        assert f"refused the session; told the server: {why}" in result.stdout
        # the server: the status reason, the log and the audit say which rule
        expected = f"client 'silo-b' refused to join: {why}"
        assert session.failure_reason == expected
        assert [line.message for line in session.logs()][-1] == expected
        assert session.participants() == []
        audit = httpx.get(
            f"{thread_server.url}{API_PREFIX}/audit",
            params={"action": "participant.refuse"},
            headers={"Authorization": f"Bearer {thread_server.token}"},
        ).json()
        assert [(e["target"], e["detail"]) for e in audit] == [(session.id, expected)]
        _cancel(thread_server, session.id)
    _assert_nothing_of_the_silo_stored(thread_server, tmp_path)


def test_min_rows_by_default_refuses_a_small_table_before_joining(
    thread_server: ThreadServer,
    tokens: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = tmp_path / "silo-b.csv"
    # 2 attributes (a, y): the default min_rows is 7
    pd.DataFrame({"a": [SECRET_VALUE, 1.0, 2.0, 3.0, 4.0, 5.0], "y": np.ones(6)}).to_csv(
        table, index=False
    )
    policy = tmp_path / "policy.toml"
    policy.write_text("# the defaults\n")
    monkeypatch.setenv("FEDSILO_CLIENT_POLICY", str(policy))
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = _echo(analyst)
        result = _train(thread_server, tokens["silo-b"], session.id, table)

        why = f"{POLICY} 'min_rows': the train table has 6 row(s); at least 7 are required"
        assert result.exit_code == 2, result.output
        assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert session.failure_reason == f"client 'silo-b' refused to join: {why}"
        assert session.participants() == []

        # seven rows are enough, and the session completes
        pd.DataFrame({"a": np.arange(7.0), "y": np.ones(7)}).to_csv(table, index=False)
        result = _train(thread_server, tokens["silo-b"], session.id, table)
        assert result.exit_code == 0, result.output
        assert "policy ok: releases need at least 7 row(s)" in result.stdout
        assert session.status == "Completed"
    _assert_nothing_of_the_silo_stored(thread_server, tmp_path)


def test_a_bad_policy_file_stops_the_client_before_it_connects(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    table = tmp_path / "silo-b.csv"
    pd.DataFrame({"a": np.arange(9.0), "y": np.ones(9)}).to_csv(table, index=False)
    policy = tmp_path / "policy.toml"
    policy.write_text('min_rows = "ten"\nmax_epsilon = -1\n')
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = _echo(analyst)
        result = _train(thread_server, tokens["silo-b"], session.id, table, "--policy", str(policy))
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1
        assert "has 2 problem(s): 'min_rows': " in result.stderr
        assert "'max_epsilon': Input should be greater than 0, got -1" in result.stderr
        assert result.stdout == ""
        assert session.failure_reason is None and session.participants() == []
        _cancel(thread_server, session.id)


def _frame(positives: int, rows: int = 40, secret: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(positives)
    x0 = rng.normal(size=rows)
    if secret:
        x0[0] = SECRET_VALUE
    y = np.zeros(rows, dtype=np.int64)
    y[:positives] = 1
    return pd.DataFrame({"x0": x0, "x1": rng.normal(size=rows), "y": y})


def test_min_rows_refuses_a_release_over_fewer_rows_mid_session(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path, state_dir: Path
) -> None:
    """ffnet's balance_train_datasets undersamples each class to the smallest: silo-b's
    40 rows with 3 positives train on 6 a epoch, below its min_rows of 10."""
    config = {
        "strategy": {"name": "FedAvg", "params": {}},
        "model": {"params": {"input_size": 2, "hidden_layer_sizes": [2], "output_size": 2}},
        "ml_task": {"type": "classification", "params": {"loss_weights": None}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1, "momentum": 0.0}},
        "balance_train_datasets": True,
        "seed": 3,
    }
    frames = {"silo-a": _frame(20), "silo-b": _frame(3, secret=True)}
    results: dict[str, Any] = {}
    lines: list[str] = []

    def run(name: str, session_id: str) -> None:
        path = tmp_path / f"{name}.parquet"
        frames[name].to_parquet(path)
        with ApiClient(thread_server.url, tokens[name]) as api:
            runtime = ClientRuntime(
                api,
                session_id,
                name,
                str(path),
                batch_size=16,
                poll_wait=1.0,
                state_dir=state_dir,
                on_event=lines.append if name == "silo-b" else None,
                policy=DataOwnerPolicy(min_rows=10),
            )
            results[name] = runtime.run()

    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = analyst.create_fl_session(
            name="policy mid-session",
            min_num_clients=2,
            num_rounds=1,
            package_name="ffnet",
            model_config=config,
            data_config={"predictors": ["x0", "x1"], "target": "y"},
        ).start()
        threads = [threading.Thread(target=run, args=(n, session.id)) for n in frames]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert results == {"silo-a": SessionStatus.completed, "silo-b": SessionStatus.completed}

        why = (
            "the data owner's policy refuses the release: rule 'min_rows': a release over "
            "6 row(s) of the train table; at least 10 are required"
        )
        # the operator sees the refused release
        assert any(line.endswith(f"(fit, round 1): {why}") for line in lines), lines
        # the server's log names the client, the task and the rule
        logged = [line.message for line in session.logs() if "min_rows" in line.message]
        assert len(logged) == 1, [line.message for line in session.logs()]
        assert logged[0].startswith("round 1: task 'fit' failed on 1 client(s): ")
        assert "silo-b" in logged[0] and why in logged[0]
        assert session.status == "Completed"
    _assert_nothing_of_the_silo_stored(thread_server, tmp_path)


def test_min_rows_holds_each_column_an_eda_session_reads(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path, state_dir: Path
) -> None:
    """30 rows, but column b has 3 values: its exact min, max and moments would be over 3
    rows, so the client refuses before joining (before round 1's profile)."""
    b = np.full(30, np.nan)
    b[:3] = [SECRET_VALUE, 1.0, 2.0]
    path = tmp_path / "silo-b.parquet"
    pd.DataFrame({"a": np.arange(30.0), "b": b}).to_parquet(path)
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = analyst.create_eda_session(
            name="policy eda", data_config={"silo-b": ["a", "b"]}, epsilon=None
        ).start()
        with ApiClient(thread_server.url, tokens["silo-b"]) as api:
            runtime = ClientRuntime.for_dataset(
                api,
                session.id,
                str(path),
                "silo-b",
                poll_wait=1.0,
                state_dir=state_dir,
                on_event=lambda _: None,
                policy=DataOwnerPolicy(min_rows=10),
            )
            with pytest.raises(PolicyRefusal) as caught:
                runtime.run()
        why = f"{POLICY} 'min_rows': column 'b' has 3 non-null value(s); at least 10 are required"
        assert caught.value.reason == why
        assert session.failure_reason == f"client 'silo-b' refused to join: {why}"
        assert session.participants() == []
        _cancel(thread_server, session.id)
    _assert_nothing_of_the_silo_stored(thread_server, tmp_path)


def test_under_secure_aggregation_the_release_check_sees_the_unmasked_counts(
    thread_server: ThreadServer,
    tokens: dict[str, str],
    scoped_tokens: ScopedTokens,
    tmp_path: Path,
    state_dir: Path,
) -> None:
    """The release check sits inside the masking: silo-c's fit, balanced down to 6 rows,
    is refused by min_rows before it is masked; the round completes with the other two
    (the threshold of 3 is 2) and the policy requiring secure aggregation admits it all."""
    config = {
        "strategy": {"name": "FedAvg", "params": {}},
        "model": {"params": {"input_size": 2, "hidden_layer_sizes": [2], "output_size": 2}},
        "ml_task": {"type": "classification", "params": {"loss_weights": None}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1, "momentum": 0.0}},
        "balance_train_datasets": True,
        "seed": 3,
        "secure_aggregation": {"enabled": True},
    }
    tokens["silo-c"] = scoped_tokens.client(thread_server.url, thread_server.token, "silo-c")
    frames = {"silo-a": _frame(20), "silo-b": _frame(15), "silo-c": _frame(3)}
    results: dict[str, Any] = {}
    policy = DataOwnerPolicy(min_rows=10, require_secure_aggregation=True)

    def run(name: str, session_id: str) -> None:
        path = tmp_path / f"{name}.parquet"
        frames[name].to_parquet(path)
        with ApiClient(thread_server.url, tokens[name]) as api:
            runtime = ClientRuntime(
                api,
                session_id,
                name,
                str(path),
                batch_size=16,
                poll_wait=1.0,
                state_dir=state_dir,
                on_event=lambda _: None,
                policy=policy,
            )
            results[name] = runtime.run()

    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = analyst.create_fl_session(
            name="policy secure",
            min_num_clients=3,
            num_rounds=1,
            package_name="ffnet",
            model_config=config,
            data_config={"predictors": ["x0", "x1"], "target": "y"},
        ).start()
        threads = [threading.Thread(target=run, args=(n, session.id)) for n in frames]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert results == dict.fromkeys(frames, SessionStatus.completed)
        assert session.status == "Completed"
        why = (
            "the data owner's policy refuses the release: rule 'min_rows': a release over "
            "6 row(s) of the train table; at least 10 are required"
        )
        logged = [line.message for line in session.logs() if "min_rows" in line.message]
        assert len(logged) == 1 and "silo-c" in logged[0] and why in logged[0], logged
    # silo-b's fit released its 2 * 15 balanced rows: a count only the unmasked reply has
    # (the masked one carries no num_examples); silo-c's refused 6 rows are not recorded
    history = json.loads((state_dir / "policy" / "released_rows.json").read_text())
    assert history[str(tmp_path / "silo-b.parquet")] in ([30], [30, 40])  # 40: its init
    assert history[str(tmp_path / "silo-a.parquet")] == [40]
    assert history.get(str(tmp_path / "silo-c.parquet"), [40]) == [40]


def test_approved_package_digests_approve_an_uploaded_package(
    thread_server: ThreadServer, scoped_tokens: ScopedTokens, tokens: dict[str, str], tmp_path: Path
) -> None:
    """The policy's NAME@SHA256 pins are the client's approvals of uploaded packages: without
    the package's digest the client refuses before loading its code, with it the code runs."""
    from fedsilo.packages.custom.archive import pack_folder

    example = Path(__file__).parents[3] / "examples" / "custom_packages" / "digitscnn"
    archive = pack_folder(example)
    digest = hashlib.sha256(archive).hexdigest()
    uploader = scoped_tokens(thread_server.url, thread_server.token, ["custom_model"], "modeller")
    uploaded = httpx.post(
        f"{thread_server.url}{API_PREFIX}/packages",
        content=archive,
        params={"name": "digitscnn", "task": "classification"},
        headers={"Authorization": f"Bearer {uploader}", "Content-Type": "application/octet-stream"},
    )
    assert uploaded.status_code == 201, uploaded.text
    with fedsilo.connect(thread_server.url, thread_server.token) as admin:
        session = admin.create_fl_session(
            name="policy custom",
            min_num_clients=1,
            num_rounds=1,
            package_name="digitscnn",
            model_config=json.loads((example / "model_config.json").read_text()),
            data_config={},
        ).start()
    images = tmp_path / "images"
    images.mkdir()
    policy = tmp_path / "policy.toml"

    table = tmp_path / "table.csv"
    pd.DataFrame({"a": np.arange(9.0)}).to_csv(table, index=False)
    policy.write_text(f'approved_package_digests = ["digitscnn@{"0" * 64}"]\n')
    refused = _train(thread_server, tokens["silo-b"], session.id, table, "--policy", str(policy))
    assert refused.exit_code == 2, refused.output
    assert "--approve-package" in refused.stderr  # the code was not loaded
    assert "running uploaded package" not in refused.stdout

    policy.write_text(f'approved_package_digests = ["digitscnn@{digest}"]\n')
    approved = _train(thread_server, tokens["silo-b"], session.id, images, "--policy", str(policy))
    assert f"running uploaded package digitscnn sha256 {digest} (approved)" in approved.stdout
    _cancel(thread_server, session.id)
