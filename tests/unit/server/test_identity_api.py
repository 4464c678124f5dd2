"""Users, scoped tokens, ownership, the audit log and the edge's hardening, over real HTTP.

Every test runs against the in-thread server (tests/conftest.py) on SQLite and on the memory
store; identities are made through the API itself, as an operator would.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from fedsilo.scopes import MAX_SCOPED_TOKEN_DAYS, MAX_TOKEN_DAYS
from fedsilo.server.auth import FAILURE_LIMIT, FailureLimiter, hash_token
from fedsilo.server.state import SqlStore, TokenRecord
from fedsilo.wire import decode_frame

#: the keys of the seed's token_info example, which fedsilo's answer carries too
SEED_TOKEN_INFO_KEYS = {
    "customer", "email", "realm", "role", "env", "token_id", "iss", "iat", "renewable",
    "scope", "user_id", "user_type", "active",
}  # fmt: skip
OWNER_SCOPES = [
    "create_session",
    "start_session",
    "read_user_session",
    "cancel_user_session",
    "delete_user_session",
    "user_model_download",
]


class Identities:
    """Users and tokens made through the API with the admin token."""

    def __init__(self, server: Any, admin: httpx.Client) -> None:
        self.server = server
        self.admin = admin
        self.clients: list[httpx.Client] = []

    def user(self, name: str) -> dict[str, Any]:
        response = self.admin.post("/users", json={"name": name})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def token(self, user: str, scopes: list[str] | None = None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"user_id": user, **fields}
        if scopes is not None:
            body["scopes"] = scopes
        response = self.admin.post("/tokens", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def client(self, secret: str) -> httpx.Client:
        made = httpx.Client(
            base_url=self.server.url + "/api/v1",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        self.clients.append(made)
        return made

    def as_user(self, name: str, scopes: list[str]) -> httpx.Client:
        self.user(name)
        return self.client(self.token(name, scopes)["token"])


@pytest.fixture
def ids(thread_server: Any, api: httpx.Client) -> Iterator[Identities]:
    made = Identities(thread_server, api)
    yield made
    for client in made.clients:
        client.close()


def echo_session(client: httpx.Client, clients: int = 1) -> str:
    body = {
        "name": "echo",
        "package_name": "echo",
        "min_num_clients": clients,
        "num_rounds": 1,
        "model_config": {},
        "data_config": {"columns": ["a"]},
    }
    response = client.post("/sessions", json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["id"]
    return sid


def audit_actions(api: httpx.Client, **filters: Any) -> list[tuple[str, str, str]]:
    entries = api.get("/audit", params=filters).json()
    return [(e["action"], e["target"], e["outcome"]) for e in entries]


# ------------------------------------------------------------------------ users


def test_users_are_created_listed_and_deleted(api: httpx.Client, ids: Identities) -> None:
    admin = next(u for u in api.get("/users").json() if u["name"] == "admin")
    assert admin["user_type"] == "human" and admin["active"]

    user = ids.user("demo-user")
    assert re.fullmatch(r"[0-9a-f]{10}@fedsilo", user["id"]), user["id"]
    assert (user["name"], user["user_type"], user["created_by"]) == (
        "demo-user",
        "generated",
        admin["id"],
    )
    taken = api.post("/users", json={"name": "demo-user"})
    assert (taken.status_code, taken.json()["detail"]) == (409, "User name 'demo-user' is taken.")
    assert {"admin", "demo-user"} == {u["name"] for u in api.get("/users").json()}

    assert api.delete("/users/demo-user").json()["id"] == user["id"]
    gone = api.delete("/users/demo-user")
    assert (gone.status_code, gone.json()["detail"]) == (404, "User 'demo-user' not found.")
    # a new user under the old name is a new identity
    assert ids.user("demo-user")["id"] != user["id"]


def test_the_callers_own_user_cannot_be_deleted(api: httpx.Client) -> None:
    response = api.delete("/users/admin")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("Cannot delete user 'admin': it is the user")


def test_a_deleted_users_token_is_refused_at_once(ids: Identities, api: httpx.Client) -> None:
    analyst = ids.as_user("analyst", ["read_user_session"])
    assert analyst.get("/sessions").status_code == 200  # now in the token cache
    assert api.delete("/users/analyst").status_code == 200
    response = analyst.get("/sessions")
    assert (response.status_code, response.json()) == (
        401,
        {"detail": "The token's user was deleted."},
    )
    # its tokens were revoked with it
    tokens = api.get("/tokens").json()
    assert all(t["revoked_at"] for t in tokens if t["name"] == "analyst")


# ----------------------------------------------------------------------- tokens


def test_a_token_without_scopes_is_least_privilege_for_30_days(
    ids: Identities, api: httpx.Client
) -> None:
    user = ids.user("demo-user")
    before = datetime.now(UTC)
    created = ids.token("demo-user")
    assert created["scopes"] == ["read_user_session"]
    assert (created["user_id"], created["user_name"], created["name"]) == (
        user["id"],
        "demo-user",
        "demo-user",
    )
    assert created["token"].startswith("fs_") and len(created["token"]) > 40
    created_at = datetime.fromisoformat(created["created_at"])
    assert before <= created_at <= datetime.now(UTC)
    assert datetime.fromisoformat(created["expires_at"]) - created_at == timedelta(days=30)
    # by id as well as by name; and an empty list is the least privilege too
    by_id = ids.token(user["id"], [], name="notebook")
    assert (by_id["user_name"], by_id["scopes"], by_id["name"]) == (
        "demo-user",
        ["read_user_session"],
        "notebook",
    )
    # the caller's own user when none is named
    own = api.post("/tokens", json={"scopes": ["read_all_session"]}).json()
    assert own["user_name"] == "admin"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"scopes": ["read_user_session"], "expires_in_days": MAX_SCOPED_TOKEN_DAYS + 1},
            "expires_in_days: a scoped token lives at most 30 days; only a token whose scopes "
            "are exactly ['admin'] may live longer. Got 31.",
        ),
        (
            {"scopes": ["admin", "client"], "expires_in_days": None},
            "expires_in_days: a scoped token lives at most 30 days; only a token whose scopes "
            "are exactly ['admin'] may live longer. Got null (never expires).",
        ),
        (
            {"scopes": ["admin"], "expires_in_days": MAX_TOKEN_DAYS + 1},
            "expires_in_days: a token lives at most 3650 days (null: never expires). Got 3651.",
        ),
        (
            {"scopes": ["read_user_session", "superuser", "root"]},
            "scopes: unknown scope(s) 'superuser', 'root'; known: start_session, "
            "create_session, cancel_user_session, read_user_session, read_all_session, "
            "custom_model, delete_user_session, model_download, user_model_download, admin, "
            "client.",
        ),
    ],
)
def test_token_limits_and_unknown_scopes_are_422(
    api: httpx.Client, body: dict[str, Any], detail: str
) -> None:
    response = api.post("/tokens", json=body)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


def test_admin_tokens_may_live_longer_or_forever(api: httpx.Client) -> None:
    forever = api.post("/tokens", json={"scopes": ["admin"], "expires_in_days": None}).json()
    assert forever["expires_at"] is None
    long = api.post("/tokens", json={"scopes": ["admin"], "expires_in_days": MAX_TOKEN_DAYS})
    assert long.status_code == 201
    missing = api.post("/tokens", json={"user_id": "nobody"})
    assert (missing.status_code, missing.json()["detail"]) == (404, "User 'nobody' not found.")


def test_token_info_has_the_seeds_shape(
    ids: Identities, api: httpx.Client, thread_server: Any
) -> None:
    user = ids.user("demo-user")
    created = ids.token("demo-user", ["create_session", "read_user_session"])
    as_user = ids.client(created["token"])
    info = as_user.post("/tokens/info", json={"token": created["token"]}).json()
    assert set(info) >= SEED_TOKEN_INFO_KEYS
    assert info == {
        "customer": "fedsilo",
        "email": user["id"],
        "realm": "fedsilo",
        "role": "user",
        "env": "local",
        "token_id": created["id"],
        "iss": "fedsilo",
        "iat": int(datetime.fromisoformat(created["created_at"]).timestamp()),
        "expires": int(datetime.fromisoformat(created["expires_at"]).timestamp()),
        "renewable": False,
        "scope": "create_session read_user_session",
        "user_id": "demo-user",
        "user_type": "generated",
        "active": True,
    }
    admin_info = api.post("/tokens/info", json={"token": thread_server.token}).json()
    assert (admin_info["role"], admin_info["user_type"], admin_info["expires"]) == (
        "admin",
        "human",
        None,
    )
    # an admin inspects any token, and sees a revoked one as inactive
    api.delete(f"/tokens/{created['id']}")
    assert api.post("/tokens/info", json={"token": created["token"]}).json()["active"] is False


def test_only_an_admin_inspects_another_token(ids: Identities, api: httpx.Client) -> None:
    ids.user("a")
    mine, other = ids.token("a"), ids.token("a")
    as_mine = ids.client(mine["token"])
    for secret in (other["token"], "fs_not-a-token"):
        response = as_mine.post("/tokens/info", json={"token": secret})
        assert (response.status_code, response.json()["detail"]) == (
            403,
            "Inspecting another token needs the 'admin' scope.",
        )
    unknown = api.post("/tokens/info", json={"token": "fs_not-a-token"})
    assert (unknown.status_code, unknown.json()["detail"]) == (
        404,
        "No token matches the one given.",
    )


def test_revocation_is_immediate_with_a_stable_detail(ids: Identities, api: httpx.Client) -> None:
    ids.user("a")
    first, second = ids.token("a"), ids.token("a")
    as_first, as_second = ids.client(first["token"]), ids.client(second["token"])
    assert as_first.get("/sessions").status_code == 200  # cached
    # a token may revoke itself, not another
    denied = as_second.delete(f"/tokens/{first['id']}")
    assert (denied.status_code, denied.json()["detail"]) == (
        403,
        "Revoking another token needs the 'admin' scope.",
    )
    assert as_second.delete(f"/tokens/{second['id']}").json()["revoked_at"] is not None
    assert api.delete(f"/tokens/{first['id']}").status_code == 200
    for client in (as_first, as_second):
        response = client.get("/sessions")
        assert (response.status_code, response.json()) == (
            401,
            {"detail": "Token has been revoked."},
        )
    listed = api.get("/tokens", params={"user": "a"}).json()
    assert {t["id"] for t in listed} == {first["id"], second["id"]}
    assert all("token" not in t and "token_hash" not in t for t in listed)


def test_the_last_admin_token_is_kept(api: httpx.Client, thread_server: Any) -> None:
    admin_token = next(t for t in api.get("/tokens").json() if t["name"] == "admin")
    response = api.delete(f"/tokens/{admin_token['id']}")
    assert response.status_code == 409
    assert "last active admin token" in response.json()["detail"]
    spare = api.post("/tokens", json={"scopes": ["admin"]}).json()
    assert api.delete(f"/tokens/{admin_token['id']}").status_code == 200
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {spare['token']}"},
    ) as as_spare:
        assert as_spare.get("/users").status_code == 200


# ------------------------------------------------------------ scopes and owners


def test_a_missing_scope_is_403_naming_it(ids: Identities) -> None:
    reader = ids.as_user("reader", ["read_user_session"])
    cases = [
        ("POST", "/sessions", "This call needs the 'create_session' scope."),
        ("GET", "/users", "This call needs the 'admin' scope."),
        ("POST", "/tokens", "This call needs the 'admin' scope."),
        ("GET", "/audit", "This call needs the 'admin' scope."),
        ("POST", "/sessions/0123456789/start", "This call needs the 'start_session' scope."),
        (
            "GET",
            "/sessions/0123456789/model",
            "This call needs the 'model_download' or 'user_model_download' scope.",
        ),
    ]
    for method, path, detail in cases:
        response = reader.request(method, path, json={})
        assert (response.status_code, response.json()) == (403, {"detail": detail}), path


def test_user_scopes_act_only_on_the_owners_sessions(ids: Identities, api: httpx.Client) -> None:
    alice = ids.as_user("alice", OWNER_SCOPES)
    bob = ids.as_user("bob", OWNER_SCOPES)
    auditor = ids.as_user("auditor", ["read_all_session"])
    sid = echo_session(alice)
    session = alice.get(f"/sessions/{sid}").json()
    alice_id = next(u["id"] for u in api.get("/users").json() if u["name"] == "alice")
    assert (session["owner_id"], session["created_by"]) == (alice_id, "alice")

    assert [s["id"] for s in alice.get("/sessions").json()] == [sid]
    assert bob.get("/sessions").json() == []
    assert [s["id"] for s in auditor.get("/sessions").json()] == [sid]
    assert auditor.get(f"/sessions/{sid}/metrics").status_code == 200
    for method, path in [
        ("GET", f"/sessions/{sid}"),
        ("GET", f"/sessions/{sid}/metrics"),
        ("GET", f"/sessions/{sid}/logs"),
        ("GET", f"/sessions/{sid}/participants"),
        ("GET", f"/sessions/{sid}/model"),
        ("POST", f"/sessions/{sid}/cancel"),
        ("DELETE", f"/sessions/{sid}"),
    ]:
        response = bob.request(method, path)
        assert response.status_code == 403, path
        assert response.json()["detail"].startswith(f"Session {sid} belongs to another user")
    # start_session acts on any user's session (the seed: "start a training session")
    assert bob.post(f"/sessions/{sid}/start").json()["status"] == "pending"
    assert alice.post(f"/sessions/{sid}/cancel").json()["status"] == "canceled"
    assert alice.delete(f"/sessions/{sid}").status_code == 204
    denied = [a for a in audit_actions(api, user="bob") if a[2] == "denied"]
    assert ("session.read", sid, "denied") in denied
    assert ("session.cancel", sid, "denied") in denied
    assert ("model.download", sid, "denied") in denied


def test_a_client_token_runs_a_session_and_nothing_else(
    ids: Identities, api: httpx.Client, silos: Any, helpers: Any
) -> None:
    owner = ids.as_user("owner", OWNER_SCOPES)
    ids.user("silo-a")
    client_secret = ids.token("silo-a", ["client"])["token"]
    sid = echo_session(owner)
    assert owner.post(f"/sessions/{sid}/start").status_code == 200
    silo = silos(sid, "silo-a")
    silo.http.headers["Authorization"] = f"Bearer {client_secret}"
    # what a client reads to join: the session and its participants
    assert silo.http.get(f"/sessions/{sid}").status_code == 200
    assert silo.join().status_code == 201
    assert silo.http.get(f"/sessions/{sid}/participants").status_code == 200
    for method, path in [
        ("GET", "/sessions"),
        ("GET", f"/sessions/{sid}/metrics"),
        ("GET", f"/sessions/{sid}/model"),
        ("POST", f"/sessions/{sid}/cancel"),
    ]:
        assert silo.http.request(method, path).status_code == 403, path

    done = threading.Event()

    def answer() -> None:
        response = silo.next()
        while response.status_code in (200, 204):
            if response.status_code == 200:
                task_id, arrays, _ = helpers.task_of(response)
                response = silo.reply(task_id, arrays, {"num_examples": 3}, wait=10)
            else:
                response = silo.next()
        done.set()

    thread = threading.Thread(target=answer)
    thread.start()
    thread.join(timeout=60)
    assert done.is_set()
    assert helpers.wait_until(lambda: owner.get(f"/sessions/{sid}").json()["status"] != "running")
    model = owner.get(f"/sessions/{sid}/model")
    assert model.status_code == 200, model.text
    arrays, header = decode_frame(model.content)
    assert header["package_name"] == "echo"
    assert all(np.isfinite(a).all() for a in arrays.values())
    actions = audit_actions(api, target=sid)
    assert [a for a, _, outcome in actions if outcome == "ok"] == [
        "session.create",
        "session.start",
        "participant.join",
        "model.download",
    ]


def test_poll_and_reply_need_the_client_scope_and_the_credential(
    ids: Identities, api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=2)
    silo = silos(sid, "silo-a")
    assert silo.join().status_code == 201
    reader = ids.as_user("reader", ["read_all_session"])
    tasks = f"/sessions/{sid}/participants/{silo.id}/tasks/next"
    response = reader.get(tasks, params={"wait": 0}, headers=silo.headers)
    assert response.json()["detail"] == "This call needs the 'client' scope."
    ids.user("silo-b")
    other_client = ids.client(ids.token("silo-b", ["client"])["token"])
    response = other_client.get(tasks, params={"wait": 0})
    assert response.status_code == 403
    assert "participant credential is missing" in response.json()["detail"]


# ---------------------------------------------------------------------- the edge


def test_failed_authentications_are_rate_limited_per_address(thread_server: Any) -> None:
    url = thread_server.url + "/api/v1/sessions"
    good = {"Authorization": f"Bearer {thread_server.token}"}
    for _ in range(3 * FAILURE_LIMIT):  # successes are never limited
        assert httpx.get(url, headers=good).status_code == 200
    for _ in range(FAILURE_LIMIT):
        response = httpx.get(url, headers={"Authorization": "Bearer fs_guess"})
        assert response.status_code == 401
    refused = httpx.get(url, headers={"Authorization": "Bearer fs_guess"})
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Too many failed authentications")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # refused before the token is looked at: a valid token from that address waits too
    assert httpx.get(url, headers=good).status_code == 429
    thread_server.app_state.auth_limiter.clear()
    assert httpx.get(url, headers=good).status_code == 200


def test_the_failure_limiter_has_bounded_memory_and_windows() -> None:
    limiter = FailureLimiter(limit=2, window_s=10, max_addresses=100)
    for i in range(1000):
        limiter.fail(f"10.0.{i // 256}.{i % 256}", now=float(i))
    assert len(limiter) == 100
    limiter.fail("10.9.9.9", now=0.0)
    assert limiter.retry_after("10.9.9.9", now=0.5) is None
    limiter.fail("10.9.9.9", now=1.0)
    assert limiter.retry_after("10.9.9.9", now=2.5) == 8  # ceil(0 + 10 - 2.5)
    assert limiter.retry_after("10.9.9.9", now=10.0) is None  # the window is over
    limiter.fail("10.9.9.9", now=10.0)
    assert limiter.retry_after("10.9.9.9", now=10.5) is None  # a new window, one failure


def test_every_change_is_audited_with_user_token_and_address(
    ids: Identities, api: httpx.Client, thread_server: Any
) -> None:
    user = ids.user("demo-user")
    token = ids.token("demo-user", ["create_session", "read_user_session"])
    as_user = ids.client(token["token"])
    sid = echo_session(as_user)
    assert as_user.post(f"/sessions/{sid}/cancel").status_code == 403
    api.post(f"/sessions/{sid}/cancel")
    api.delete(f"/sessions/{sid}")
    api.delete(f"/tokens/{token['id']}")
    api.delete("/users/demo-user")

    entries = api.get("/audit").json()
    admin_token = next(t for t in api.get("/tokens").json() if t["name"] == "admin")
    assert [(e["action"], e["target"], e["outcome"]) for e in entries] == [
        ("user.create", "demo-user", "ok"),
        ("token.create", token["id"], "ok"),
        ("session.create", sid, "ok"),
        ("session.cancel", sid, "denied"),
        ("session.cancel", sid, "ok"),
        ("session.delete", sid, "ok"),
        ("token.revoke", token["id"], "ok"),
        ("user.delete", "demo-user", "ok"),
    ]
    by_user = {e["action"] + e["outcome"]: e for e in entries}
    assert by_user["session.createok"]["user_id"] == user["id"]
    assert by_user["session.createok"]["token_id"] == token["id"]
    assert by_user["user.createok"]["token_id"] == admin_token["id"]
    assert all(e["address"] == "127.0.0.1" for e in entries)
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    # filters: by user (name, or a deleted user's id), dotted action prefix, target
    assert len(api.get("/audit", params={"user": user["id"]}).json()) == 2
    assert {e["action"] for e in api.get("/audit", params={"action": "session"}).json()} == {
        "session.create",
        "session.cancel",
        "session.delete",
    }
    assert len(api.get("/audit", params={"target": sid, "limit": 2}).json()) == 2
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert api.get("/audit", params={"since": later}).json() == []


def test_secrets_reach_neither_logs_nor_the_database(
    ids: Identities,
    api: httpx.Client,
    thread_server: Any,
    silos: Any,
    helpers: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admin_file = thread_server.settings.resolved_data_dir() / "admin_token"
    ids.user("demo-user")
    created = ids.token("demo-user", ["read_user_session"])
    as_user = ids.client(created["token"])
    as_user.post("/tokens/info", json={"token": created["token"]})
    sid = helpers.create_session(api, clients=2)
    silo = silos(sid, "silo-a")
    assert silo.join().status_code == 201
    api.delete(f"/tokens/{created['id']}")
    revoked = as_user.get("/sessions")
    wrong = httpx.get(
        thread_server.url + "/api/v1/sessions", headers={"Authorization": "Bearer fs_wrong-guess"}
    )
    secrets = [created["token"], silo.credential, thread_server.token, "fs_wrong-guess"]
    for response in (revoked, wrong):
        assert all(secret not in response.text for secret in secrets)
    assert all(secret not in caplog.text for secret in secrets)
    # everything persisted but the admin token file (its secret, mode 0600, by design)
    stored = b"".join(v for k, v in thread_server.stored().items() if k != str(admin_file))
    for secret in secrets:
        assert secret.encode() not in stored
    assert hash_token(created["token"]).encode() in stored  # what is kept instead


def test_an_older_database_gets_an_admin_user_owning_its_tokens(
    server_settings: Any, request: pytest.FixtureRequest
) -> None:
    if server_settings.db_url is not None:
        pytest.skip("an older database is a SQLite file written before the server starts")
    server_settings.resolved_data_dir().mkdir(parents=True)
    store = SqlStore(server_settings.resolved_db_url())
    old = TokenRecord(
        id="0123456789ab",
        name="old-admin",
        token_hash=hash_token("fs_old-admin"),
        created_at=datetime.now(UTC) - timedelta(days=3),
        scopes=("admin",),
    )
    store.add_token(old)  # as an earlier version wrote it: no user
    store.close()
    server = request.getfixturevalue("thread_server")
    with httpx.Client(
        base_url=server.url + "/api/v1", headers={"Authorization": "Bearer fs_old-admin"}
    ) as old_api:
        assert [u["name"] for u in old_api.get("/users").json()] == ["admin"]
        tokens = old_api.get("/tokens").json()
        assert {t["name"]: t["user_name"] for t in tokens} == {
            "old-admin": "admin",
            "admin": "admin",  # FEDSILO_ADMIN_TOKEN, new to this database
        }
        info = old_api.post("/tokens/info", json={"token": "fs_old-admin"}).json()
        assert (info["user_id"], info["role"], info["active"]) == ("admin", "admin", True)


def test_a_malformed_secret_is_not_echoed_in_the_422(api: httpx.Client) -> None:
    secret = "fs_" + "x" * 600  # longer than a token may be
    response = api.post("/tokens/info", json={"token": secret})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("body.token: String should have at most 512")
    assert "xxxxx" not in response.text
