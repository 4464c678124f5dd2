"""The auth SDK (``fedsilo.auth``) against a real server in a thread: the seed's walkthrough,
scoped tokens and their limits, token_info, revocation, users and the audit log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

import fedsilo.auth
import fedsilo.scopes
from fedsilo.auth import AuthClient, Scope, connect_to_auth_client
from fedsilo.errors import AuthenticationError, ConflictError, NotFoundError, PermissionDenied
from fedsilo.errors import ValidationError as ApiValidationError
from fedsilo.wire import TokenInfo

if TYPE_CHECKING:
    from conftest import ThreadServer

# The state store's backends are covered by the server's tests; these exercise the SDK's
# calls, so one backend is enough.
sqlite_only = pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)

DAY = 86_400


@pytest.fixture
def auth(thread_server: ThreadServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthClient]:
    monkeypatch.delenv("FEDSILO_TOKEN", raising=False)
    monkeypatch.setenv("FEDSILO_URL", thread_server.url)
    with connect_to_auth_client(token=thread_server.token) as client:
        yield client


def as_token(thread_server: ThreadServer, secret: str) -> AuthClient:
    return connect_to_auth_client(thread_server.url, secret)


def test_the_seed_imports() -> None:
    from fedsilo.auth.scopes import Scope as SeedScope

    assert SeedScope is Scope is fedsilo.scopes.Scope
    assert fedsilo.auth.__all__ == ["AuthClient", "Scope", "connect_to_auth_client"]
    assert {s.value for s in Scope} >= {
        "start_session",
        "create_session",
        "cancel_user_session",
        "read_user_session",
        "read_all_session",
        "custom_model",
        "delete_user_session",
        "model_download",
        "user_model_download",
    }


@sqlite_only
def test_the_seed_walkthrough(
    auth: AuthClient, thread_server: ThreadServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin_id = auth.token_info(thread_server.token)["email"]
    with caplog.at_level(logging.INFO, logger="fedsilo.auth"):
        user = auth.create_user("demo-user")
    assert [r.getMessage() for r in caplog.records if r.name == "fedsilo.auth"] == [
        f"Machine user demo-user({user['id']}) created by {admin_id}.",
        "User activated.",
    ]
    assert user["name"] == "demo-user"
    assert user["user_type"] == "generated"
    assert user["active"] is True
    assert user["created_by"] == admin_id

    token = auth.create_token(
        user_id="demo-user", scopes=[Scope.create_session, Scope.read_user_session]
    )
    # the seed: "the unique user ID (the generated email), a list of the granted scopes, and
    # the token, as well as the token ID and the user name"
    assert token["token"].startswith("fs_")
    assert token["token_id"] == token["id"]
    assert token["user_id"] == user["id"]
    assert token["user_name"] == "demo-user"
    assert token["scopes"] == ["create_session", "read_user_session"]

    info = auth.token_info(token["token"])
    assert set(info) == set(TokenInfo.model_fields)
    assert info["token_id"] == token["token_id"]
    assert info["user_id"] == "demo-user"
    assert info["email"] == user["id"]
    assert info["scope"] == "create_session read_user_session"
    assert info["user_type"] == "generated"
    assert info["role"] == "user"
    assert info["active"] is True
    # the default lifespan is thirty days
    assert info["expires"] - info["iat"] == pytest.approx(30 * DAY, abs=5)

    auth.revoke_token(token["token_id"])
    with (
        as_token(thread_server, token["token"]) as revoked,
        pytest.raises(AuthenticationError) as caught,
    ):
        revoked.token_info(token["token"])
    assert caught.value.detail == "Token has been revoked."
    assert token["token"] not in str(caught.value)

    deleted = auth.delete_user("demo-user")
    assert deleted["id"] == user["id"]
    assert "demo-user" not in [u["name"] for u in auth.list_users()]


@sqlite_only
def test_admin_token_info(auth: AuthClient, thread_server: ThreadServer) -> None:
    info = auth.token_info(thread_server.token)
    assert info["role"] == "admin"
    assert "admin" in info["scope"].split()
    assert info["user_id"] == "admin"


@sqlite_only
def test_the_last_admin_token_stays(auth: AuthClient, thread_server: ThreadServer) -> None:
    admin_token = auth.token_info(thread_server.token)["token_id"]
    with pytest.raises(ConflictError, match="last active admin token"):
        auth.revoke_token(admin_token)
    spare = auth.create_token("admin", [Scope.admin], name="spare")
    assert auth.revoke_token(admin_token)["revoked_at"] is not None
    with as_token(thread_server, spare["token"]) as spare_auth:
        assert spare_auth.token_info(spare["token"])["role"] == "admin"


@sqlite_only
def test_scopes_as_strings_and_unknown_scopes(auth: AuthClient) -> None:
    auth.create_user("u1")
    assert auth.create_token("u1", ["model_download", Scope.start_session])["scopes"] == [
        "model_download",
        "start_session",
    ]
    # a string is space-separated, as token_info's `scope` spells them
    assert auth.create_token("u1", "create_session read_user_session")["scopes"] == [
        "create_session",
        "read_user_session",
    ]
    before = len(auth.list_tokens("u1"))
    with pytest.raises(ValueError, match=r"create_token.*'read_model'.*known: start_session"):
        auth.create_token("u1", ["create_session", "read_model"])
    assert len(auth.list_tokens("u1")) == before  # refused before any request


@sqlite_only
def test_no_scopes_is_least_privilege_never_admin(auth: AuthClient) -> None:
    auth.create_user("u1")
    token = auth.create_token("u1")
    assert token["scopes"] == ["read_user_session"]
    assert auth.token_info(token["token"])["role"] == "user"


@sqlite_only
def test_token_lifetimes(auth: AuthClient) -> None:
    auth.create_user("u1")
    with pytest.raises(ApiValidationError) as caught:
        auth.create_token("u1", [Scope.read_user_session], expires_in_days=31)
    assert "30" in str(caught.value.detail)
    with pytest.raises(ApiValidationError):
        auth.create_token("u1", [Scope.read_user_session], expires_in_days=None)

    # an admin token (the seed's unscoped one) may live longer, or never expire
    long_lived = auth.create_token("u1", [Scope.admin], expires_in_days=365)
    expires = datetime.fromisoformat(long_lived["expires_at"]).replace(tzinfo=UTC)
    assert expires - datetime.now(UTC) == pytest.approx(timedelta(days=365), abs=timedelta(1))
    forever = auth.create_token("u1", [Scope.admin], expires_in_days=None)
    assert forever["expires_at"] is None
    assert auth.token_info(forever["token"])["expires"] is None


@sqlite_only
def test_list_tokens_by_user_never_shows_secrets(auth: AuthClient) -> None:
    auth.create_user("u1")
    auth.create_user("u2")
    mine = auth.create_token("u1", [Scope.read_user_session], name="notebook")
    auth.create_token("u2", [Scope.read_user_session])
    listed = auth.list_tokens(user="u1")
    assert [t["id"] for t in listed] == [mine["id"]]
    assert listed[0]["name"] == "notebook"
    assert all("token" not in t for t in auth.list_tokens())
    assert mine["token"] not in repr(auth.list_tokens())
    with pytest.raises(NotFoundError):
        auth.create_token("nobody", [Scope.read_user_session])


@sqlite_only
def test_a_scoped_token_manages_only_itself(auth: AuthClient, thread_server: ThreadServer) -> None:
    auth.create_user("u1")
    token = auth.create_token("u1", [Scope.create_session, Scope.read_all_session])
    other = auth.create_token("u1", [Scope.read_user_session])
    with as_token(thread_server, token["token"]) as scoped:
        with pytest.raises(PermissionDenied) as caught:
            scoped.create_user("u2")
        assert "admin" in str(caught.value.detail)
        with pytest.raises(PermissionDenied):
            scoped.list_tokens()
        with pytest.raises(PermissionDenied):
            scoped.audit()
        with pytest.raises(PermissionDenied):
            scoped.token_info(other["token"])
        with pytest.raises(PermissionDenied):
            scoped.revoke_token(other["token_id"])
        assert scoped.token_info(token["token"])["token_id"] == token["token_id"]
        assert scoped.revoke_token(token["token_id"])["revoked_at"] is not None
        with pytest.raises(AuthenticationError):
            scoped.token_info(token["token"])


@sqlite_only
def test_users(auth: AuthClient, thread_server: ThreadServer) -> None:
    human = auth.create_user("ada@example.org", user_type="human")
    assert human["user_type"] == "human"
    with pytest.raises(ConflictError):
        auth.create_user("ada@example.org")
    names = [u["name"] for u in auth.list_users()]
    assert names[0] == "admin" and "ada@example.org" in names
    with pytest.raises(NotFoundError):
        auth.delete_user("nobody")
    with pytest.raises(ConflictError):
        auth.delete_user("admin")  # the caller's own user, and the last admin

    # deleting a user revokes its tokens; a new user of the same name is someone else
    token = auth.create_token("ada@example.org", [Scope.read_user_session])
    auth.delete_user("ada@example.org")
    with (
        as_token(thread_server, token["token"]) as gone,
        pytest.raises(AuthenticationError) as caught,
    ):
        gone.token_info(token["token"])
    assert caught.value.detail in {"Token has been revoked.", "The token's user was deleted."}
    again = auth.create_user("ada@example.org")
    assert again["id"] != human["id"]


@sqlite_only
def test_audit(auth: AuthClient, thread_server: ThreadServer) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    admin = auth.token_info(thread_server.token)
    user = auth.create_user("u1")
    token = auth.create_token("u1", [Scope.read_user_session])
    auth.revoke_token(token["token_id"])

    entries = auth.audit(user="admin", since=start)
    actions = [(e["action"], e["target"]) for e in entries]
    assert ("user.create", "u1") in actions
    assert ("token.create", token["id"]) in actions
    assert ("token.revoke", token["id"]) in actions
    assert all(e["user_id"] == admin["email"] for e in entries)
    assert all(e["token_id"] == admin["token_id"] for e in entries)
    assert all(e["outcome"] == "ok" for e in entries)
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs)

    # a dotted prefix, an ISO string for since, the newest `limit`
    tokens_only = auth.audit(action="token", since=start.isoformat())
    assert {e["action"] for e in tokens_only} == {"token.create", "token.revoke"}
    assert [e["action"] for e in auth.audit(action="token", limit=1)] == ["token.revoke"]
    assert auth.audit(target=user["name"], action="user.create")[-1]["target"] == "u1"
    assert auth.audit(since=datetime.now(UTC) + timedelta(hours=1)) == []
    # no secret is ever written to the log
    assert token["token"] not in repr(auth.audit())


def test_connect_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSILO_TOKEN", raising=False)
    with pytest.raises(AuthenticationError, match="FEDSILO_TOKEN"):
        connect_to_auth_client("http://127.0.0.1:9")


@sqlite_only
def test_env_token(thread_server: ThreadServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSILO_URL", thread_server.url)
    monkeypatch.setenv("FEDSILO_TOKEN", thread_server.token)
    with connect_to_auth_client() as auth:
        assert auth.url == thread_server.url
        assert auth.list_users()[0]["name"] == "admin"
