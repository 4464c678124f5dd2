"""The REST API at its edge: auth, validation, not-found and state errors, with stable details."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from fedsilo.scopes import Scope
from fedsilo.server.auth import issue_token

SEED_FFNET_CONFIG: dict[str, Any] = {
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
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


@pytest.fixture
def api(thread_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=60,  # the first session request may wait for the packages' imports
    ) as client:
        yield client


def session_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "t",
        "description": "d",
        "package_name": "ffnet",
        "min_num_clients": 2,
        "num_rounds": 2,
        "model_config": SEED_FFNET_CONFIG,
        "data_config": DATA_CONFIG,
    }
    body.update(overrides)
    return body


def test_healthz_needs_no_token(thread_server: Any) -> None:
    response = httpx.get(thread_server.url + "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_openapi_docs_are_served(thread_server: Any) -> None:
    assert httpx.get(thread_server.url + "/docs").status_code == 200
    spec = httpx.get(thread_server.url + "/openapi.json").json()
    assert "/api/v1/sessions/{session_id}/participants/{participant_id}/tasks/next" in spec["paths"]


def test_admin_token_file_is_private(thread_server: Any) -> None:
    path = thread_server.settings.resolved_data_dir() / "admin_token"
    assert path.read_text().strip() == thread_server.token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "Missing bearer token: send 'Authorization: Bearer <token>'."),
        ("Bearer nope", "Invalid token."),
        ("Basic abc", "Malformed Authorization header: expected 'Bearer <token>'."),
    ],
)
def test_requests_without_a_valid_token_get_401(
    thread_server: Any, header: str | None, detail: str
) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(thread_server.url + "/api/v1/sessions", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}


def test_revoked_and_expired_tokens_get_401(thread_server: Any, api: httpx.Client) -> None:
    created = api.post("/tokens", json={"name": "analyst", "expires_in_days": 1}).json()
    as_new = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(thread_server.url + "/api/v1/sessions", headers=as_new).status_code == 200
    listed = api.get("/tokens").json()
    assert {"admin", "analyst"} <= {t["name"] for t in listed}
    assert all("token" not in t and "token_hash" not in t for t in listed)

    assert api.delete(f"/tokens/{created['id']}").json()["revoked_at"] is not None
    response = httpx.get(thread_server.url + "/api/v1/sessions", headers=as_new)
    assert (response.status_code, response.json()["detail"]) == (401, "Token has been revoked.")

    store = thread_server.app_state.store
    admin = store.get_user_by_name("admin")
    expired = issue_token(store, admin, "old", [Scope.admin], timedelta(seconds=-1))
    response = httpx.get(
        thread_server.url + "/api/v1/sessions",
        headers={"Authorization": f"Bearer {expired.token}"},
    )
    assert (response.status_code, response.json()["detail"]) == (401, "Token has expired.")


def test_create_and_read_a_session(api: httpx.Client) -> None:
    created = api.post("/sessions", json=session_body())
    assert created.status_code == 201, created.text
    session = created.json()
    assert len(session["id"]) == 10 and session["status"] == "created"
    assert session["model_config"] == SEED_FFNET_CONFIG
    assert api.get(f"/sessions/{session['id']}").json()["name"] == "t"
    assert session["id"] in [s["id"] for s in api.get("/sessions").json()]


def test_unknown_session_is_404(api: httpx.Client) -> None:
    for method, path in [
        ("GET", "/sessions/0123456789"),
        ("POST", "/sessions/0123456789/start"),
        ("GET", "/sessions/0123456789/metrics"),
        ("GET", "/sessions/0123456789/model"),
    ]:
        response = api.request(method, path)
        assert response.status_code == 404
        assert response.json() == {"detail": "Session 0123456789 not found."}


def test_unknown_package_is_422_listing_known_ones(api: httpx.Client) -> None:
    response = api.post("/sessions", json=session_body(package_name="iai_ffnet"))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "Unknown package_name 'iai_ffnet'" in detail
    assert "ffnet" in detail.split("Known packages:")[1]


def test_malformed_model_config_is_422_naming_field_and_value(api: httpx.Client) -> None:
    bad = dict(SEED_FFNET_CONFIG, optimizer={"name": "SGD", "params": {"learning_rate": -1}})
    response = api.post("/sessions", json=session_body(model_config=bad))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "optimizer.params.learning_rate" in detail and "-1" in detail


def test_malformed_data_config_is_422_naming_field_and_value(api: httpx.Client) -> None:
    response = api.post(
        "/sessions", json=session_body(data_config={"predictors": DATA_CONFIG["predictors"]})
    )
    assert response.status_code == 422
    assert "data_config" in response.json()["detail"]
    assert "target" in response.json()["detail"]


def test_malformed_session_fields_are_422_with_a_string_detail(api: httpx.Client) -> None:
    response = api.post("/sessions", json=session_body(min_num_clients=0))
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "body.min_num_clients: Input should be greater than or equal to 1 (got 0)"
    )


def test_state_errors_are_409(api: httpx.Client) -> None:
    sid = api.post("/sessions", json=session_body()).json()["id"]
    assert api.post(f"/sessions/{sid}/cancel").json()["status"] == "canceled"
    response = api.post(f"/sessions/{sid}/start")
    assert response.status_code == 409
    assert response.json()["detail"] == f"Cannot start session {sid}: it is canceled, not created."
    response = api.post(f"/sessions/{sid}/cancel")
    assert response.json()["detail"] == f"Cannot cancel session {sid}: it is canceled."
    assert api.delete(f"/sessions/{sid}").status_code == 204
    assert api.get(f"/sessions/{sid}").status_code == 404


def test_packages_and_their_schemas_are_listed(api: httpx.Client) -> None:
    names = {p["name"] for p in api.get("/packages").json()}
    assert {"ffnet", "echo"} <= names
    schema = api.get("/packages/ffnet/schema").json()
    assert schema["model_config"]["type"] == "object"
