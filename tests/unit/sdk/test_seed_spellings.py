"""The SDK spellings of the seed documentation, against the real server (in a thread).

``session.metrics.as_dict()`` (the seed's Evaluation metrics section) beside
``session.metrics().as_dict()`` (its tutorials), and a status that equals the seed SDK's
names (``"Running"``) as well as the API's values (``"running"``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.http import ApiClient
from fedsilo.sdk.metrics import MetricsAccessor, SessionMetrics
from fedsilo.sdk.session import SdkSessionStatus
from fedsilo.wire import SessionStatus

if TYPE_CHECKING:
    from conftest import ThreadServer

SEED_NAMES = ("Created", "Pending", "Running", "Completed", "Failed", "Canceled")


@pytest.fixture
def client(thread_server: ThreadServer) -> Iterator[fedsilo.Client]:
    with fedsilo.connect(thread_server.url, thread_server.token) as sdk_client:
        yield sdk_client


def _echo_session(client: fedsilo.Client, clients: int = 1, rounds: int = 2) -> fedsilo.Session:
    return client.create_fl_session(
        name="echo",
        description="seed spellings",
        min_num_clients=clients,
        num_rounds=rounds,
        package_name="echo",
        model_config={"payload_size": 4},
        data_config={"columns": ["a"]},
    )


def _run_echo_client(
    thread_server: ThreadServer, session: fedsilo.Session, tmp_path: Path
) -> SessionStatus:
    table = tmp_path / "silo.csv"
    pd.DataFrame({"a": np.arange(5.0)}).to_csv(table, index=False)
    outcome: dict[str, Any] = {}

    def run() -> None:
        with ApiClient(thread_server.url, thread_server.token) as api:
            runtime = ClientRuntime(
                api, session.id, "silo0", str(table), poll_wait=1.0,
                state_dir=tmp_path / "state", on_event=lambda _: None,
            )  # fmt: skip
            outcome["status"] = runtime.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    session.wait(timeout=60, poll_interval=0.05)
    thread.join(timeout=30)
    status: SessionStatus = outcome["status"]
    return status


# ------------------------------------------------------------------------------ metrics


def test_metrics_uncalled_and_called_give_the_same_dict(
    client: fedsilo.Client, thread_server: ThreadServer, tmp_path: Path
) -> None:
    session = _echo_session(client).start()
    assert _run_echo_client(thread_server, session, tmp_path) == SessionStatus.completed

    # the seed's Evaluation metrics section, literally
    already_trained_session_id = session.id
    session = client.fl_session(already_trained_session_id)
    metrics = session.metrics.as_dict()

    assert metrics == session.metrics().as_dict()
    assert metrics["session_id"] == session.id
    assert len(metrics["federated_metrics"]) == 2
    assert set(metrics["client_metrics"][-1]) == {"silo0"}
    assert isinstance(session.metrics, MetricsAccessor)
    assert isinstance(session.metrics(), SessionMetrics)
    assert (
        session.metrics.global_model_federated_loss
        == (metrics["latest_global_model_federated_loss"])
    )
    assert session.metrics.num_rounds == 2
    assert session.metrics.session_id == session.id
    assert session.metrics.federated_metrics == metrics["federated_metrics"]
    assert session.metrics.client_metrics == metrics["client_metrics"]
    assert session.metrics.federated_loss == session.metrics().federated_loss
    frame = session.metrics.as_dataframe()
    assert frame.equals(session.metrics().as_dataframe())
    assert isinstance(session.metrics.plot(), Figure)


def test_uncalled_metrics_fetch_afresh_while_the_session_runs(client: fedsilo.Client) -> None:
    session = _echo_session(client)
    accessor = session.metrics
    before = accessor.as_dict()  # nothing recorded yet

    assert before["federated_metrics"] == [] and before["client_metrics"] == []
    assert accessor.global_model_federated_loss is None
    assert "MetricsAccessor" in repr(accessor)  # no network in a repr


def test_the_accessor_offers_every_public_attribute_of_session_metrics() -> None:
    public = {name for name in dir(SessionMetrics) if not name.startswith("_")}
    assert public <= set(dir(MetricsAccessor))


# ------------------------------------------------------------------------------- status


def test_status_equals_the_seed_sdk_names_and_the_api_values(client: fedsilo.Client) -> None:
    session = _echo_session(client, clients=2)

    status = session.status
    assert isinstance(status, SdkSessionStatus)
    assert status == "Created" and status == "created" and status == SessionStatus.created
    assert "Created" == status and SessionStatus.created == status  # noqa: SIM300 (reflected)
    assert status != "Pending" and not (status != "Created")  # noqa: SIM202 (__ne__ itself)
    assert status.label == "Created" and str(status) == "created"

    session.start()
    assert session.status == "Pending"
    assert session.status in ("Pending", "Running")  # the seed's loop, by ==
    assert session.status in {"pending", "running"}  # by hash: the API values
    assert session.status in {SessionStatus.pending, SessionStatus.running}

    session.cancel()
    assert session.status == "Canceled" and session.status.ended


@pytest.mark.parametrize("name", SEED_NAMES)
def test_each_seed_name_matches_its_api_value(name: str) -> None:
    member = SdkSessionStatus(name)
    api_value = SessionStatus(name.lower())

    assert member is SdkSessionStatus(api_value.value)
    assert member == name and member == name.upper() and member == api_value
    assert member.label == name
    assert hash(member) == hash(api_value) == hash(name.lower())
    assert {api_value: 1}[member] == 1
    assert member.ended is api_value.ended
    others = [other for other in SEED_NAMES if other != name]
    assert all(member != other for other in others)


def test_a_capitalised_set_cannot_find_a_status() -> None:
    # Documented: no hash agrees with both "Running" and "running"; the hash is the API's.
    assert SdkSessionStatus.running not in {"Running"}
    assert SdkSessionStatus.running in ("Running",)


def test_non_strings_do_not_compare_equal() -> None:
    assert SdkSessionStatus.running != 1
    assert SdkSessionStatus.running != None  # noqa: E711 (the seed's loop starts from None)
    with pytest.raises(ValueError):
        SdkSessionStatus("started")
