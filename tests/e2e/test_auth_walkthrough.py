"""End to end: the seed's "User Authentication" walkthrough against a real server process.

The seed's calls as written, with fedsilo's names (``fedsilo.auth`` for
``integrate_ai_sdk.auth``, ``FEDSILO_TOKEN`` for ``IAI_TOKEN``): an admin (the seed's
"unscoped") token creates a user and a scoped token for it, inspects it with ``token_info``,
revokes it and deletes the user. Between those steps the scoped token is used the way the
seed means it to be: it creates and reads its own session, and is refused another user's
session, the model download and token management. Then the same through the CLI
(``fedsilo user|token|audit``), each command a real process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fedsilo
from fedsilo.errors import AuthenticationError, PermissionDenied
from fedsilo.runners.local import ServerProcess, start_server

pytestmark = pytest.mark.e2e

SEED_FFNET_CONFIG: dict[str, Any] = {
    "experiment_name": "auth walkthrough",
    "experiment_description": "a session of the scoped token's user",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}
TOKEN_INFO_KEYS = {
    "customer", "email", "realm", "role", "env", "token_id", "iss", "iat", "expires",
    "renewable", "scope", "user_id", "user_type", "active",
}  # fmt: skip
DAY_S = 86_400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("auth-server")
    with start_server(directory / "server", log_path=directory / "server.log") as process:
        yield process


def _create_session(client: fedsilo.Client, name: str) -> fedsilo.Session:
    return client.create_fl_session(
        name=name,
        description="auth walkthrough",
        min_num_clients=2,
        num_rounds=1,
        package_name="ffnet",
        model_config=SEED_FFNET_CONFIG,
        data_config=DATA_CONFIG,
    )


def test_the_seed_auth_walkthrough(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FEDSILO_URL", server.url)
    monkeypatch.setenv("FEDSILO_TOKEN", server.admin_token)
    caplog.set_level(logging.INFO, logger="fedsilo.auth")

    # --- the seed, as written ---------------------------------------------------------
    from fedsilo.auth import connect_to_auth_client
    from fedsilo.auth.scopes import Scope

    FEDSILO_TOKEN = os.environ.get("FEDSILO_TOKEN")  # noqa: N806 (the seed's spelling)
    auth_client = connect_to_auth_client(token=FEDSILO_TOKEN)

    user_name = "demo-user"
    user = auth_client.create_user(user_name)
    token = auth_client.create_token(
        user_id=user_name, scopes=[Scope.create_session, Scope.read_user_session]
    )
    print(token)
    info = auth_client.token_info(token["token"])
    # ------------------------------------------------------------------------------------

    assert user["name"] == user_name and user["user_type"] == "generated" and user["active"]
    assert f"user {user_name}({user['id']}) created" in caplog.text
    assert token["user_name"] == user_name and token["user_id"] == user["id"]
    assert sorted(token["scopes"]) == ["create_session", "read_user_session"]
    assert token["token"] and token["token_id"] == token["id"]

    assert set(info) == TOKEN_INFO_KEYS
    assert info["scope"].split() == ["create_session", "read_user_session"]
    assert (info["user_id"], info["email"], info["token_id"]) == (
        user_name,
        user["id"],
        token["token_id"],
    )
    assert (info["user_type"], info["active"], info["role"]) == ("generated", True, "user")
    assert info["expires"] - info["iat"] == pytest.approx(30 * DAY_S, abs=60)  # the default

    # An admin token's own info: the seed's "unscoped" token is role admin.
    assert auth_client.token_info(server.admin_token)["role"] == "admin"

    with fedsilo.connect(server.url, server.admin_token) as admin:
        others = _create_session(admin, "the admin's session")

    with fedsilo.connect(server.url, token["token"]) as scoped:
        # what it was granted: create a session, and read it (it owns it)
        own = _create_session(scoped, "demo-user's session")
        assert scoped.fl_session(own.id).name == "demo-user's session"
        assert own.refresh().owner_id == user["id"]
        assert [s.id for s in scoped.sessions()] == [own.id]  # only its own sessions
        assert own.logs() is not None and own.metrics() is not None

        # what it was not granted
        with pytest.raises(PermissionDenied, match="belongs to another user"):
            scoped.fl_session(others.id)
        with pytest.raises(PermissionDenied, match="model_download"):
            own.model()
        with pytest.raises(PermissionDenied, match="start_session"):
            own.start()
        scoped_auth = connect_to_auth_client(server.url, token["token"])
        with pytest.raises(PermissionDenied, match="'admin'"):
            scoped_auth.create_token(user_id=user_name, scopes=[Scope.read_all_session])
        with pytest.raises(PermissionDenied, match="'admin'"):
            scoped_auth.list_tokens()
        with pytest.raises(PermissionDenied, match="'admin'"):
            scoped_auth.create_user("mallory")
        assert scoped_auth.token_info(token["token"])["token_id"] == token["token_id"]
        with pytest.raises(PermissionDenied):
            scoped_auth.token_info(server.admin_token)  # another token's info: admin only

        # --- the seed: revoke the token, delete the user ----------------------------------
        auth_client.revoke_token(token["token_id"])
        # ----------------------------------------------------------------------------------
        with pytest.raises(AuthenticationError, match=r"Token has been revoked\."):
            scoped.fl_session(own.id)
        scoped_auth.close()

    second = auth_client.create_token(user_id=user_name, scopes=[Scope.read_user_session])
    # --- the seed ---------------------------------------------------------------------------
    auth_client.delete_user(user_name)
    # ----------------------------------------------------------------------------------------
    assert user_name not in [u["name"] for u in auth_client.list_users()]
    with (
        fedsilo.connect(server.url, second["token"]) as orphan,
        pytest.raises(AuthenticationError, match=r"The token's user was deleted\."),
    ):
        orphan.sessions()

    # The seed: "Tokens are tied to user identities through a unique ID, which is logged
    # with each user action."
    created = auth_client.audit(target=own.id)
    assert [(e["user_id"], e["token_id"], e["outcome"]) for e in created][:1] == [
        (user["id"], token["token_id"], "ok")
    ]
    denied = auth_client.audit(target=others.id, user=user["id"])
    assert denied and all(e["outcome"] == "denied" for e in denied)
    assert any(e["target"] == token["token_id"] for e in auth_client.audit(action="token"))
    assert any(e["target"] == user_name for e in auth_client.audit(action="user"))
    auth_client.close()


# ------------------------------------------------------------------------------- the CLI


def fedsilo_cli(
    server: ServerProcess, *args: str, token: str, stdin: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``fedsilo ARGS`` as a process; the token travels in the environment."""
    env = {**os.environ, "FEDSILO_URL": server.url, "FEDSILO_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-m", "fedsilo", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if ok:
        assert done.returncode == 0, f"fedsilo {' '.join(args)}: {done.stderr}"
    return done


def test_the_walkthrough_through_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    admin = server.admin_token
    made = json.loads(fedsilo_cli(server, "user", "create", "cli-user", "--format", "json",
                                  token=admin).stdout)  # fmt: skip
    assert made["name"] == "cli-user" and made["user_type"] == "generated"

    created = fedsilo_cli(
        server, "token", "create", "--user", "cli-user", "--scope", "create_session",
        "--scope", "read_user_session", "--name", "notebook", token=admin,
    )  # fmt: skip
    secret = created.stdout.strip()
    assert secret.startswith("fs_") and "\n" not in secret  # the secret alone on stdout
    assert secret not in created.stderr

    # info: the token inspects itself; the secret comes on stdin, not the command line
    info = json.loads(fedsilo_cli(server, "token", "info", "-", "--format", "json",
                                  token=secret, stdin=secret + "\n").stdout)  # fmt: skip
    assert info["scope"] == "create_session read_user_session"
    assert info["user_id"] == "cli-user" and info["role"] == "user"

    # no --scope: least privilege, never admin
    bare = fedsilo_cli(server, "token", "create", "--user", "cli-user", token=admin).stdout.strip()
    bare_info = json.loads(fedsilo_cli(server, "token", "info", "--format", "json",
                                       token=bare).stdout)  # fmt: skip
    assert bare_info["scope"] == "read_user_session" and bare_info["role"] == "user"

    listed = json.loads(fedsilo_cli(server, "token", "list", "--user", "cli-user", "--format",
                                    "json", token=admin).stdout)  # fmt: skip
    assert {t["id"] for t in listed} == {info["token_id"], bare_info["token_id"]}
    assert all("token" not in t for t in listed) and secret not in json.dumps(listed)

    # the scoped token cannot manage tokens: one line, non-zero, names the scope
    refused = fedsilo_cli(server, "token", "list", token=secret, ok=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "'admin'" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    fedsilo_cli(server, "token", "revoke", info["token_id"], token=admin)
    after = fedsilo_cli(server, "token", "info", "--format", "json", token=secret, ok=False)
    assert after.returncode != 0 and "Token has been revoked." in after.stderr
    assert "Traceback" not in after.stderr

    entries = json.loads(fedsilo_cli(server, "audit", "list", "--format", "json",
                                     token=admin).stdout)  # fmt: skip
    targets = {(e["action"].split(".")[0], e["target"]) for e in entries}
    assert ("token", info["token_id"]) in targets and ("user", "cli-user") in targets
    assert all(secret not in json.dumps(e) for e in entries)
    table = fedsilo_cli(server, "audit", "list", "--user", "admin", token=admin).stdout
    assert info["token_id"] in table

    fedsilo_cli(server, "user", "delete", "cli-user", token=admin)
    users = json.loads(fedsilo_cli(server, "user", "list", "--format", "json",
                                   token=admin).stdout)  # fmt: skip
    assert "cli-user" not in [u["name"] for u in users]
