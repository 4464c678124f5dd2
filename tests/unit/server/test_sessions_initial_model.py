"""``PUT /sessions/{sid}/initial-model``: a safetensors state dict as a session's initial
model (issue 15 item 6, seed 002), over real HTTP against the in-thread server (SQLite and
the memory store).

What is checked: the stored bytes and their SHA-256 (response, audit, session log), the
refusals (not safetensors, a non-numeric or non-finite tensor, a package without
``initial_parameters``, a model config that already gives them, a session that started, a
caller who is not the owner's ``create_session`` nor admin), and that the model config the
workflow gets (:func:`fedsilo.server.initial_model.with_initial_model`) makes the strategy's
round-1 model exactly the upload, or fails naming the tensors that do not fit.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.packages.ffnet.server import model_template
from fedsilo.server.initial_model import (
    model_key,
    parse_initial_model,
    store_initial_model,
    with_initial_model,
)
from fedsilo.server.state import ArtifactStore
from fedsilo.strategies import get_strategy
from fedsilo.wire import OCTET_STREAM

API = "/api/v1"
SHAPES = {
    "hidden0.weight": (6, 15),
    "hidden0.bias": (6,),
    "output.weight": (2, 6),
    "output.bias": (2,),
}
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


def ffnet_config(**params: Any) -> dict[str, Any]:
    return {
        "strategy": {"name": "fedavg", "params": params},
        "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6], "output_size": 2}},
        "ml_task": {"type": "classification", "params": {}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
    }


def state_dict(shapes: dict[str, tuple[int, ...]] = SHAPES, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(http: httpx.Client, token: str, model_config: dict[str, Any] | None = None) -> str:
    body = {
        "name": "fusion",
        "package_name": "ffnet",
        "min_num_clients": 2,
        "num_rounds": 1,
        "model_config": model_config if model_config is not None else ffnet_config(),
        "data_config": DATA_CONFIG,
    }
    response = http.post(f"{API}/sessions", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def upload(http: httpx.Client, token: str, sid: str, data: bytes) -> httpx.Response:
    headers = {**bearer(token), "Content-Type": OCTET_STREAM}
    return http.put(f"{API}/sessions/{sid}/initial-model", content=data, headers=headers)


@pytest.fixture
def http(thread_server: Any) -> Any:
    with httpx.Client(base_url=thread_server.url, timeout=30) as client:
        yield client


def test_an_upload_is_stored_with_its_digest_audited_and_logged(
    thread_server: Any, http: httpx.Client, scoped_tokens: Any
) -> None:
    token = scoped_tokens.analyst(thread_server.url, thread_server.token, "meera")
    sid = create(http, token)
    data = save(state_dict())
    response = upload(http, token, sid, data)
    assert response.status_code == 200, response.text
    body = response.json()
    digest = hashlib.sha256(data).hexdigest()
    assert body == {
        "session_id": sid,
        "sha256": digest,
        "size": len(data),
        "parameters": 6 * 15 + 6 + 2 * 6 + 2,
        "shapes": {n: list(s) for n, s in sorted(SHAPES.items())},
        "dtypes": dict.fromkeys(sorted(SHAPES), "float32"),
    }
    assert thread_server.app_state.artifacts.read_bytes(model_key(sid)) == data
    entries = http.get(f"{API}/audit", headers=bearer(thread_server.token)).json()
    mine = [e for e in entries if e["action"] == "session.initial_model"]
    assert [(e["target"], e["outcome"], e["detail"]) for e in mine] == [(sid, "ok", digest)]
    logs = http.get(f"{API}/sessions/{sid}/logs", headers=bearer(token)).json()
    assert any(digest in line["message"] for line in logs)

    # a second upload before the start replaces the first
    again = save(state_dict(seed=1))
    assert upload(http, token, sid, again).json()["sha256"] == hashlib.sha256(again).hexdigest()
    assert thread_server.app_state.artifacts.read_bytes(model_key(sid)) == again

    # deleting the session deletes its initial model
    assert http.delete(f"{API}/sessions/{sid}", headers=bearer(thread_server.token)).is_success
    assert thread_server.app_state.artifacts.read_bytes(model_key(sid)) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00" * 16, "not valid safetensors"),
        (b"not a frame", "expected a safetensors state dict"),
        (save({"mask": np.ones(3, dtype=bool)}), "'mask' has dtype bool"),
        (save({"w": np.array([1.0, np.nan], np.float32)}), "'w' holds a value that is not finite"),
        (save({}), "holds no tensor"),
    ],
)
def test_a_body_that_is_not_a_numeric_state_dict_is_refused_naming_why(
    thread_server: Any, http: httpx.Client, data: bytes, expected: str
) -> None:
    sid = create(http, thread_server.token)
    response = upload(http, thread_server.token, sid, data)
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    assert thread_server.app_state.artifacts.read_bytes(model_key(sid)) is None


def test_the_conflicts_are_409_naming_both_ways_and_the_state(
    thread_server: Any, http: httpx.Client
) -> None:
    admin = thread_server.token
    listed = {n: a.tolist() for n, a in state_dict().items()}
    given = create(http, admin, ffnet_config(initial_parameters=listed))
    both = upload(http, admin, given, save(state_dict()))
    assert both.status_code == 409, both.text
    assert "PUT /sessions/{sid}/initial-model" in both.json()["detail"]
    assert "strategy.params.initial_parameters" in both.json()["detail"]

    started = create(http, admin)
    assert http.post(f"{API}/sessions/{started}/start", headers=bearer(admin)).is_success
    late = upload(http, admin, started, save(state_dict()))
    assert late.status_code == 409, late.text
    assert "it is pending" in late.json()["detail"]
    assert "before the session starts" in late.json()["detail"]


@pytest.mark.parametrize(
    ("kind", "package", "model_config", "data_config"),
    [
        ("eda", "eda", {}, {"columns": ["a"]}),
        ("hfl", "arrays", {"driver": True}, {}),  # the driver holds the strategy
        ("hfl", "arrays", {}, {}),
    ],
)
def test_a_package_without_initial_parameters_refuses_an_upload(
    thread_server: Any,
    http: httpx.Client,
    kind: str,
    package: str,
    model_config: dict[str, Any],
    data_config: dict[str, Any],
) -> None:
    body = {
        "name": "none",
        "kind": kind,
        "package_name": package,
        "min_num_clients": 1,
        "num_rounds": 1,
        "model_config": model_config,
        "data_config": data_config,
    }
    created = http.post(f"{API}/sessions", json=body, headers=bearer(thread_server.token))
    assert created.status_code == 201, created.text
    if package == "arrays" and not model_config:  # arrays without a driver takes one
        sid = created.json()["id"]
        assert upload(http, thread_server.token, sid, save(state_dict())).status_code == 200
        return
    response = upload(http, thread_server.token, created.json()["id"], save(state_dict()))
    assert response.status_code == 422, response.text
    assert "takes no initial model" in response.json()["detail"]


def test_only_the_owners_create_session_or_admin_may_upload(
    thread_server: Any, http: httpx.Client, scoped_tokens: Any
) -> None:
    url, admin = thread_server.url, thread_server.token
    owner = scoped_tokens.analyst(url, admin, "alice")
    other = scoped_tokens.analyst(url, admin, "bob")
    reader = scoped_tokens(url, admin, ("read_user_session", "start_session"), "alice")
    sid = create(http, owner)
    data = save(state_dict())
    refused = upload(http, other, sid, data)
    assert refused.status_code == 403, refused.text
    assert "belongs to another user" in refused.json()["detail"]
    no_scope = upload(http, reader, sid, data)
    assert no_scope.status_code == 403, no_scope.text
    assert "'create_session'" in no_scope.json()["detail"]
    assert upload(http, admin, sid, data).status_code == 200
    missing = upload(http, admin, "0123456789", data)
    assert missing.status_code == 404, missing.text


# ------------------------------------------------ what the workflow gets at the start


def test_the_workflow_config_makes_round_one_the_upload(tmp_path: Path) -> None:
    """The injected config parses as the package's, and the strategy's round-1 model (what
    ffnet, custom and arrays start from) is the uploaded arrays, exactly."""
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    package = get_package("ffnet")
    config = ffnet_config(fraction_fit=0.5)
    assert with_initial_model(artifacts, "s1", package, config, DATA_CONFIG) is config
    state = state_dict()
    data = save(state)
    _, summary = parse_initial_model(data, 10**6)
    store_initial_model(artifacts, "s1", data, summary)
    given = with_initial_model(artifacts, "s1", package, config, DATA_CONFIG)
    assert config["strategy"]["params"] == {"fraction_fit": 0.5}  # the stored one is untouched
    model_config, _ = package.parse_configs(given, DATA_CONFIG)
    strategy = get_strategy(model_config.strategy.name, model_config.strategy.params)
    assert strategy.params.fraction_fit == 0.5
    first = strategy.initial_arrays(model_template(model_config))
    assert first.keys() == state.keys()
    for name, array in state.items():
        np.testing.assert_array_equal(first[name], array)
        assert first[name].dtype == np.float32


def test_an_upload_that_does_not_fit_the_model_fails_naming_the_tensors(tmp_path: Path) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    package = get_package("ffnet")
    wrong = {**SHAPES, "hidden0.weight": (6, 14), "extra": (3,)}
    wrong.pop("output.bias")
    data = save(state_dict(wrong))
    store_initial_model(artifacts, "s2", data, parse_initial_model(data, 10**6)[1])
    given = with_initial_model(artifacts, "s2", package, ffnet_config(), DATA_CONFIG)
    model_config, _ = package.parse_configs(given, DATA_CONFIG)
    strategy = get_strategy(model_config.strategy.name, model_config.strategy.params)
    with pytest.raises(ConfigError) as caught:
        strategy.initial_arrays(model_template(model_config))
    message = str(caught.value)
    assert "'output.bias' is missing" in message
    assert "'extra' is not part of the model" in message
    assert "'hidden0.weight' has shape (6, 14), expected (6, 15)" in message


def test_both_an_upload_and_initial_parameters_fail_the_start(tmp_path: Path) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    data = save(state_dict())
    store_initial_model(artifacts, "s3", data, parse_initial_model(data, 10**6)[1])
    config = ffnet_config(initial_parameters={n: a.tolist() for n, a in state_dict().items()})
    with pytest.raises(ConfigError, match="give the initial model once"):
        with_initial_model(artifacts, "s3", get_package("ffnet"), config, DATA_CONFIG)


def test_an_upload_over_the_parameter_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"holds 128 numbers; this server takes at most 100"):
        parse_initial_model(save({"w": np.zeros((8, 16), np.float32)}), 100)


def test_the_engine_fails_a_session_whose_upload_does_not_fit_naming_the_tensor(
    thread_server: Any, http: httpx.Client
) -> None:
    admin = thread_server.token
    sid = create(http, admin)
    wrong = {**SHAPES, "hidden0.weight": (6, 14)}
    assert upload(http, admin, sid, save(state_dict(wrong))).status_code == 200
    assert http.post(f"{API}/sessions/{sid}/start", headers=bearer(admin)).is_success
    deadline = time.monotonic() + 5  # ffnet checks its initial model before waiting for clients
    session = http.get(f"{API}/sessions/{sid}", headers=bearer(admin)).json()
    while session["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
        session = http.get(f"{API}/sessions/{sid}", headers=bearer(admin)).json()
    assert session["status"] == "failed", session
    assert "'hidden0.weight' has shape (6, 14), expected (6, 15)" in session["failure_reason"]


def test_an_upload_larger_than_a_json_body_is_bounded_by_the_frame_limit(
    thread_server: Any, http: httpx.Client
) -> None:
    """A model's frame easily passes the 4 MiB JSON limit; it is a frame, not JSON."""
    admin = thread_server.token
    wide = {"input_size": 15, "hidden_layer_sizes": [2048, 512], "output_size": 2}
    body = {
        "name": "wide",
        "package_name": "ffnet",
        "min_num_clients": 2,
        "num_rounds": 1,
        "model_config": {**ffnet_config(), "model": {"params": wide}},
        "data_config": DATA_CONFIG,
    }
    created = http.post(f"{API}/sessions", json=body, headers=bearer(admin))
    assert created.status_code == 201, created.text
    data = save({"hidden1.weight": np.zeros((512, 2048), np.float32)})
    assert len(data) > thread_server.settings.max_json_body_bytes
    response = upload(http, admin, created.json()["id"], data)
    assert response.status_code == 200, response.text
