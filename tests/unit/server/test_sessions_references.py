"""A VFL session may name (``prl_session_id``, ``training_session_id``) only a session its
creator may read: its own, or any with ``read_all_session`` / ``admin`` (issue 13's gap).

Refused with 404 and the same detail whether the named session is another user's or does
not exist, so the answer reveals nothing about other users' session ids. Real HTTP against
the in-thread server, on SQLite and the memory store.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

API = "/api/v1"
NAMES = ("passive_client", "active_client")
DATA_CONFIG = {
    "passive_client": {"label_client": False, "predictors": ["x1"], "target": None},
    "active_client": {"label_client": True, "predictors": ["x0"], "target": "y"},
}
MODEL_CONFIG: dict[str, Any] = {
    "strategy": {"name": "SplitNN", "params": {}},
    "model": {
        "feature_models": {
            name: {"params": {"input_size": 1, "hidden_layer_sizes": [2], "output_size": 2}}
            for name in NAMES
        },
        "label_model": {"params": {"hidden_layer_sizes": [2], "output_size": 2}},
    },
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05}},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def prl_session(http: httpx.Client, token: str) -> str:
    body = {
        "name": "PRL",
        "kind": "prl",
        "package_name": "prl",
        "min_num_clients": 2,
        "num_rounds": 1,
        "model_config": {},
        "data_config": {"clients": {n: {"id_columns": ["id"]} for n in NAMES}},
    }
    response = http.post(f"{API}/sessions", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def vfl_session(
    http: httpx.Client, token: str, prl: str, training: str | None = None
) -> httpx.Response:
    config: dict[str, Any] = {"vfl_mode": "train", "prl_session_id": prl, **MODEL_CONFIG}
    if training is not None:
        config = {"vfl_mode": "predict", "prl_session_id": prl, "training_session_id": training}
    body = {
        "name": "VFL",
        "kind": "vfl",
        "package_name": "splitnn",
        "min_num_clients": 2,
        "num_rounds": 1,
        "model_config": config,
        "data_config": DATA_CONFIG,
    }
    return http.post(f"{API}/sessions", json=body, headers=bearer(token))


@pytest.fixture
def tokens(thread_server: Any, scoped_tokens: Any) -> dict[str, str]:
    url, admin = thread_server.url, thread_server.token
    return {
        "alice": scoped_tokens.analyst(url, admin, "alice"),
        "bob": scoped_tokens.analyst(url, admin, "bob"),
        "auditor": scoped_tokens(url, admin, ("create_session", "read_all_session"), "carol"),
        "admin": admin,
    }


def test_a_vfl_session_may_name_only_a_prl_session_its_creator_may_read(
    thread_server: Any, tokens: dict[str, str]
) -> None:
    with httpx.Client(base_url=thread_server.url, timeout=30) as http:
        prl = prl_session(http, tokens["alice"])
        for who in ("alice", "auditor", "admin"):  # the owner; any session's readers
            created = vfl_session(http, tokens[who], prl)
            assert created.status_code == 201, f"{who}: {created.text}"
        refused = vfl_session(http, tokens["bob"], prl)
        unknown = vfl_session(http, tokens["bob"], "0123456789")
        assert (refused.status_code, unknown.status_code) == (404, 404)
        detail = refused.json()["detail"]
        assert detail == (
            f"model_config.prl_session_id: session {prl} not found among the sessions this "
            "token may read (its user's own; any user's needs 'read_all_session')."
        )
        # the same words for a session that does not exist: bob learns nothing from them
        assert unknown.json()["detail"] == detail.replace(prl, "0123456789")
        # nothing of bob's was created
        mine = http.get(f"{API}/sessions", headers=bearer(tokens["bob"])).json()
        assert mine == []


def test_a_prediction_may_name_only_a_training_session_its_creator_may_read(
    thread_server: Any, tokens: dict[str, str]
) -> None:
    with httpx.Client(base_url=thread_server.url, timeout=30) as http:
        alice_prl = prl_session(http, tokens["alice"])
        training = vfl_session(http, tokens["alice"], alice_prl).json()["id"]
        created = vfl_session(http, tokens["alice"], alice_prl, training)
        assert created.status_code == 201, created.text
        # bob's own PRL session, alice's training session: refused on the training one
        bob_prl = prl_session(http, tokens["bob"])
        refused = vfl_session(http, tokens["bob"], bob_prl, training)
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"].startswith(
            f"model_config.training_session_id: session {training} not found"
        )
        assert vfl_session(http, tokens["auditor"], alice_prl, training).status_code == 201
