"""PRL through the real server (in a thread), real ClientRuntime clients (threads) and the
SDK, as the seed walks it: the overlap statistics equal pandas' merge on the ids; nothing the
server stored holds a raw id, the clients' shared secret or their digest keys; a later
session can check a client brings the same table; a client with repeated ids refuses."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.errors import DataError
from fedsilo.http import ApiClient
from fedsilo.privacy.psi import canonical_ids, records_digest
from fedsilo.sdk.prl import PrlSession
from fedsilo.vfl.alignment import digest_key_path
from fedsilo.wire import SessionStatus

if TYPE_CHECKING:
    from conftest import ScopedTokens, ThreadServer

NAMES = ("passive_client", "active_client")
MARKER = "PATIENT-9c41"


def silo_table(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(2 * rows, rows, replace=False)
    return pd.DataFrame({"id": [f"{MARKER}-{p:05d}" for p in chosen], "x": rng.normal(size=rows)})


def run_client(
    url: str,
    token: str,
    sid: str,
    name: str,
    tables: dict[str, str],
    state: Path,
    results: dict[str, Any],
) -> None:
    with ApiClient(url, token) as api:
        runtime = ClientRuntime(
            api, sid, name, tables=tables, poll_wait=1.0, state_dir=state, on_event=lambda _: None
        )
        try:
            results[name] = runtime.run()
        except Exception as exc:  # reported to the test thread
            results[name] = exc


@pytest.fixture
def tokens(thread_server: ThreadServer, scoped_tokens: ScopedTokens) -> dict[str, str]:
    url, admin = thread_server.url, thread_server.token
    found = {"analyst": scoped_tokens.analyst(url, admin)}
    for name in NAMES:
        found[name] = scoped_tokens.client(url, admin, name)
    return found


def write_tables(tmp_path: Path) -> dict[str, dict[str, pd.DataFrame]]:
    frames = {
        name: {"train": silo_table(i, 300 - 40 * i), "test": silo_table(10 + i, 80)}
        for i, name in enumerate(NAMES)
    }
    for name, tables in frames.items():
        for table, frame in tables.items():
            frame.to_csv(tmp_path / f"{name}-{table}.csv", index=False)
    return frames


@pytest.mark.parametrize("protocol", ["keyed_hash", "ecdh"])
def test_the_seed_walkthrough_equals_pandas_and_leaves_nothing_readable_on_the_server(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path, protocol: str
) -> None:
    frames = write_tables(tmp_path)
    state = tmp_path / "state"
    data_config = {
        "clients": {name: {"id_columns": ["id"]} for name in NAMES},
        "psi_protocol": protocol,
    }
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        prl = analyst.create_prl_session(
            name="Testing notebook - PRL",
            description="I am testing PRL session creation through a notebook",
            data_config=data_config,
        ).start()
        assert isinstance(prl, PrlSession)
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(
                target=run_client,
                args=(
                    thread_server.url,
                    tokens[name],
                    prl.id,
                    name,
                    {t: str(tmp_path / f"{name}-{t}.csv") for t in ("train", "test")},
                    state,
                    results,
                ),
                daemon=True,
            )
            for name in NAMES
        ]
        for thread in threads:
            thread.start()
        prl.wait(timeout=120, progress=False)
        for thread in threads:
            thread.join(timeout=30)
        assert results == {name: SessionStatus.completed for name in NAMES}

        expected: dict[str, Any] = {name: {} for name in NAMES}
        merged = {}
        for table in ("train", "test"):
            left, right = (frames[n][table].reset_index(names=n) for n in NAMES)
            merged[table] = left.merge(right, on="id")
            for name in NAMES:
                n = len(frames[name][table])
                expected[name][table] = {
                    "n_records": n,
                    "n_overlapped_records": len(merged[table]),
                    "frac_overlapped": len(merged[table]) / n,
                }
        assert prl.metrics().as_dict() == {
            "session_id": prl.id,
            "federated_metrics": [],
            "client_metrics": expected,
        }
        again = analyst.fl_session(prl.id)  # a handle fetched later reads the same shape
        assert again.metrics().as_dict()["client_metrics"] == expected

        alignment = prl.alignment()
        assert alignment.protocol == protocol
        for table in ("train", "test"):
            ids = [frames[n][table]["id"].to_numpy()[alignment.positions(n, table)] for n in NAMES]
            np.testing.assert_array_equal(ids[0], ids[1])
            assert sorted(ids[0]) == sorted(merged[table]["id"])

    # A later session's check: the client recomputes its digest with the key it kept.
    for name in NAMES:
        key = digest_key_path(state, prl.id, name).read_bytes()
        train = frames[name]["train"]
        digest = records_digest(canonical_ids(train, ["id"], "t").records, key)
        alignment.check_digest(name, "train", digest)
        changed = records_digest(canonical_ids(train.iloc[::-1], ["id"], "t").records, key)
        with pytest.raises(DataError, match="differ from those linked in the PRL session"):
            alignment.check_digest(name, "train", changed)

    # Nothing the server stored holds a raw id, the shared secret or a digest key.
    secrets = [p.read_bytes() for p in state.rglob("prl-*") if p.is_file()]
    assert len(secrets) >= 2
    stored = thread_server.stored()
    assert any(b"shared records" in content for content in stored.values())  # the scan sees
    for where, content in stored.items():
        assert MARKER.encode() not in content, where
        for secret in secrets:
            assert secret not in content, where
            assert secret.hex().encode() not in content, where


def test_a_client_with_repeated_ids_refuses_with_count_and_positions(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    table = pd.DataFrame({"id": [f"{MARKER}-1", f"{MARKER}-2", f"{MARKER}-1", None]})
    table.to_csv(tmp_path / "dup.csv", index=False)
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        prl = analyst.create_prl_session(
            name="refusal",
            data_config={"clients": {name: {"id_columns": ["id"]} for name in NAMES}},
        ).start()
        results: dict[str, Any] = {}
        run_client(
            thread_server.url,
            tokens[NAMES[0]],
            prl.id,
            NAMES[0],
            {"train": str(tmp_path / "dup.csv")},
            tmp_path / "state",
            results,
        )
        assert isinstance(results[NAMES[0]], DataError)
        reason = prl.failure_reason or ""
        assert reason.startswith(f"client '{NAMES[0]}' refused to join"), reason
        assert "id column 'id' has 1 null value(s) (e.g. at row positions 3)" in reason
        assert "1 row(s) repeat an id tuple of an earlier row (row 2 repeats row 0)" in reason
        assert prl.participants() == []
        with fedsilo.connect(thread_server.url, thread_server.token) as admin:
            admin.fl_session(prl.id).cancel()
    for where, content in thread_server.stored().items():
        assert MARKER.encode() not in content, where
