"""The SDK against the real FastAPI app.

The app runs under uvicorn in a thread of the test process (``thread_server`` in
``tests/conftest.py``), so requests go through real HTTP on 127.0.0.1 without a process start.

Why not Starlette's ``TestClient``: the installed Starlette (1.10) warns that using it with
``httpx`` is deprecated in favour of ``httpx2`` (an error under ``filterwarnings = error``), and
with ``httpx2`` its transport is an ``httpx2`` transport the ``httpx``-based ``ApiClient``
cannot take. The ``transport=`` plumbing is tested with ``httpx.MockTransport`` instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import fedsilo
from fedsilo.errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    SessionError,
    ValidationError,
    WaitTimeout,
)
from fedsilo.wire import API_PREFIX, SessionStatus

if TYPE_CHECKING:
    from conftest import ThreadServer

# The seed tutorial's FFNet config, without differential_privacy_params (not supported yet).
MODEL_CONFIG: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
DATA_CONFIG: dict[str, Any] = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


@pytest.fixture
def client(thread_server: ThreadServer) -> Iterator[fedsilo.Client]:
    with fedsilo.connect(thread_server.url, thread_server.token) as sdk_client:
        yield sdk_client


def _create(client: fedsilo.Client, **overrides: Any) -> fedsilo.Session:
    fields: dict[str, Any] = {
        "name": "Testing notebook",
        "description": "I am testing session creation through a notebook",
        "min_num_clients": 2,
        "num_rounds": 2,
        "package_name": "ffnet",
        "model_config": MODEL_CONFIG,
        "data_config": DATA_CONFIG,
    }
    fields.update(overrides)
    return client.create_fl_session(**fields)


# ---------------------------------------------------------------- the public face


def test_public_face() -> None:
    assert fedsilo.__all__ == sorted(fedsilo.__all__, key=lambda name: (name[0].islower(), name))
    for name in fedsilo.__all__:
        assert hasattr(fedsilo, name), name
    # every public non-module name is exported (subpackages such as fedsilo.sdk are modules)
    public = {
        name
        for name, value in vars(fedsilo).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(fedsilo.__all__) - {"__version__"}
    assert isinstance(fedsilo.__version__, str)
    assert fedsilo.__version__


def test_import_fedsilo_is_light() -> None:
    code = (
        "import json, sys, fedsilo; "
        "print(json.dumps([m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


# ---------------------------------------------------------------- connect


def test_connect_reads_url_and_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, thread_server: ThreadServer
) -> None:
    monkeypatch.setenv("FEDSILO_URL", thread_server.url + "/")
    monkeypatch.setenv("FEDSILO_TOKEN", thread_server.token)
    with fedsilo.connect() as client:
        assert client.url == thread_server.url
        assert client.sessions() == []
        assert repr(client) == f"Client(url={thread_server.url!r})"


def test_connect_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSILO_TOKEN", raising=False)
    with pytest.raises(AuthenticationError, match="No token given"):
        fedsilo.connect("http://127.0.0.1:1")


def test_bad_token_is_an_authentication_error(thread_server: ThreadServer) -> None:
    with (
        fedsilo.connect(thread_server.url, "wrong-token") as client,
        pytest.raises(AuthenticationError, match="Invalid token") as caught,
    ):
        client.sessions()
    assert caught.value.status_code == 401


def test_requests_go_through_the_given_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, json={"detail": "maintenance until 10:00"})

    transport = httpx.MockTransport(handler)
    with (
        fedsilo.connect("http://fedsilo.test", "tok", transport=transport) as client,
        pytest.raises(APIError, match="server answered 503: maintenance") as caught,
    ):
        client.sessions()
    assert caught.value.status_code == 503
    assert seen[0].url == f"http://fedsilo.test{API_PREFIX}/sessions"
    assert seen[0].headers["authorization"] == "Bearer tok"


def test_health_and_packages(client: fedsilo.Client) -> None:
    assert client.health() == {"status": "ok", "version": fedsilo.__version__}
    names = [package.name for package in client.packages()]
    assert "ffnet" in names


def test_closed_client_cannot_send(client: fedsilo.Client) -> None:
    client.close()
    with pytest.raises(RuntimeError, match="client has been closed"):
        client.sessions()


# ---------------------------------------------------------------- session lifecycle


def test_create_get_list(client: fedsilo.Client) -> None:
    session = _create(client)

    assert len(session.id) == 10
    assert session.name == "Testing notebook"
    assert session.package_name == "ffnet"
    assert session.min_num_clients == 2
    assert session.num_rounds == 2
    assert session.model_config["seed"] == 23
    assert session.data_config == DATA_CONFIG
    assert session.status == SessionStatus.created
    assert session.status == "created"
    assert session.round == 0
    assert session.failure_reason is None
    assert repr(session) == (
        f"Session(id={session.id!r}, name='Testing notebook', package_name='ffnet', "
        "status='created', round=0/2)"
    )

    again = client.fl_session(session.id)
    assert again == session
    assert again.name == session.name
    other = _create(client, name="second")
    assert {s.id for s in client.sessions()} == {session.id, other.id}


def test_start_returns_the_session_and_status_is_live(client: fedsilo.Client) -> None:
    session = _create(client).start()

    assert isinstance(session, fedsilo.Session)
    # no client joined, so it waits for them
    assert session.status == SessionStatus.pending
    assert client.fl_session(session.id).status == "pending"
    with pytest.raises(ConflictError, match="it is pending, not created"):
        session.start()
    with pytest.raises(ConflictError, match="cancel it first"):
        session.delete()
    session.cancel()


def test_cancel_then_wait_raises_with_the_reason(client: fedsilo.Client) -> None:
    session = _create(client).start()

    session.cancel()
    assert session.status == SessionStatus.canceled
    assert session.failure_reason == "canceled by a user"
    with pytest.raises(SessionError, match="is canceled: canceled by a user") as caught:
        session.wait(timeout=10, progress=True)
    assert caught.value.session_id == session.id
    assert caught.value.status == "canceled"
    assert caught.value.reason == "canceled by a user"
    with pytest.raises(ConflictError, match="Cannot cancel"):
        session.cancel()


def test_wait_times_out(client: fedsilo.Client) -> None:
    session = _create(client).start()
    with pytest.raises(WaitTimeout, match=r"still pending at round 0/2 after waiting 0.3 s"):
        session.wait(timeout=0.3, poll_interval=0.05)
    session.cancel()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"timeout": -1}, "'timeout' parameter must be >= 0"), ({"poll_interval": 0}, "> 0")],
)
def test_wait_checks_its_arguments(
    client: fedsilo.Client, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _create(client).wait(**kwargs)


def test_delete(client: fedsilo.Client) -> None:
    session = _create(client)
    session.delete()
    with pytest.raises(NotFoundError, match=f"Session {session.id} not found"):
        client.fl_session(session.id)
    assert client.sessions() == []


def test_unknown_session_is_not_found(client: fedsilo.Client) -> None:
    with pytest.raises(NotFoundError, match="Session 0123456789 not found") as caught:
        client.fl_session("0123456789")
    assert caught.value.status_code == 404


def test_fresh_session_has_empty_metrics_and_no_model(client: fedsilo.Client) -> None:
    session = _create(client)

    metrics = session.metrics()
    assert metrics.as_dict() == {
        "session_id": session.id,
        "federated_metrics": [],
        "client_metrics": [],
        "latest_global_model_federated_loss": None,
    }
    with pytest.raises(NotFoundError, match=r"has no model yet .*call session.wait\(\)"):
        session.model()
    assert session.participants() == []


# ---------------------------------------------------------------- validation


def test_malformed_model_config_names_the_field(client: fedsilo.Client) -> None:
    bad = json.loads(json.dumps(MODEL_CONFIG))
    bad["model"]["params"]["hidden_layer_sizes"] = [6, 0, 6]
    with pytest.raises(ValidationError, match=r"model\.params\.hidden_layer_sizes\.1") as caught:
        _create(client, model_config=bad)
    assert caught.value.status_code == 422


def test_bad_differential_privacy_params_are_refused(client: fedsilo.Client) -> None:
    with_dp = {**MODEL_CONFIG, "differential_privacy_params": {"epsilon": 0, "max_grad_norm": 7}}
    with pytest.raises(ValidationError, match=r"differential_privacy_params\.epsilon"):
        _create(client, model_config=with_dp)


def test_malformed_session_field_names_the_field(client: fedsilo.Client) -> None:
    with pytest.raises(ValidationError, match="num_rounds") as caught:
        _create(client, num_rounds=0)
    assert "got 0" in str(caught.value.detail)


def test_unknown_package_is_a_validation_error(client: fedsilo.Client) -> None:
    with pytest.raises(ValidationError, match="Unknown package_name 'nope'"):
        _create(client, package_name="nope")


# ---------------------------------------------------------------- a whole session


def test_a_session_runs_to_completion(
    client: fedsilo.Client, thread_server: ThreadServer, tmp_path: Path
) -> None:
    """Two client runtimes in threads train 2 rounds; the SDK waits, reads metrics, the model."""
    import pandas as pd

    from fedsilo.client.runtime import ClientRuntime
    from fedsilo.data.synth import make_frames
    from fedsilo.http import ApiClient

    frames = make_frames(seed=1)
    paths: dict[str, Path] = {}
    for name in ("train_silo0", "train_silo1", "test"):
        # a slice keeps the test fast; the numbers are not the point here
        paths[name] = tmp_path / f"{name}.parquet"
        frames[name].head(2000).to_parquet(paths[name], index=False)

    session = _create(client).start()
    outcomes: dict[str, Any] = {}

    def run_client(silo: str) -> None:
        with ApiClient(thread_server.url, thread_server.token) as api:
            runtime = ClientRuntime(
                api,
                session.id,
                silo,
                str(paths[f"train_{silo}"]),
                str(paths["test"]),
                256,
                poll_wait=1.0,
                on_event=lambda line: None,
            )
            try:
                outcomes[silo] = runtime.run()
            except BaseException as exc:  # reported by the assertion below
                outcomes[silo] = exc

    threads = [threading.Thread(target=run_client, args=(silo,)) for silo in ("silo0", "silo1")]
    for thread in threads:
        thread.start()
    try:
        assert session.wait(timeout=120, poll_interval=0.1) is session
    finally:
        for thread in threads:
            thread.join(timeout=60)
    assert outcomes == {"silo0": SessionStatus.completed, "silo1": SessionStatus.completed}
    assert session.status == "completed"
    assert session.round == 2

    metrics = session.metrics().as_dict()
    assert metrics["session_id"] == session.id
    assert len(metrics["federated_metrics"]) == 2
    assert len(metrics["client_metrics"]) == 2
    assert set(metrics["client_metrics"][-1]) == {"silo0", "silo1"}
    losses = [entry["loss"] for entry in metrics["federated_metrics"]]
    assert metrics["latest_global_model_federated_loss"] == losses[-1]
    assert {p.client_name for p in session.participants()} == {"silo0", "silo1"}

    model = session.model()
    assert model.session_id == session.id
    assert model.package_name == "ffnet"
    test = pd.read_parquet(paths["test"])
    labels = model.predict(test)
    assert labels.shape == (len(test),)
    assert set(labels.tolist()) <= {0, 1}
    loaded = fedsilo.Model.load(model.save(tmp_path / "model.safetensors"))
    assert (loaded.predict(test) == labels).all()
    with pytest.raises(ConflictError, match="not created"):
        session.start()
    session.delete()
