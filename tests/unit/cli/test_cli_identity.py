"""``fedsilo user``, ``token`` and ``audit`` against a real server in a thread."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner, Result

from fedsilo.cli.app import app
from fedsilo.scopes import SCOPE_HELP, Scope

if TYPE_CHECKING:
    from conftest import ThreadServer

# One backend: the store's semantics are the server tests' business.
sqlite_only = pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)

runner = CliRunner()
Fedsilo = Callable[..., Result]


@pytest.fixture
def fedsilo(thread_server: ThreadServer, monkeypatch: pytest.MonkeyPatch) -> Fedsilo:
    """Run ``fedsilo ARGS`` against the thread server, as the admin unless ``token=`` says."""
    monkeypatch.delenv("FEDSILO_TOKEN", raising=False)
    monkeypatch.setenv("FEDSILO_URL", thread_server.url)

    def run(*args: str, token: str | None = None, stdin: str | None = None) -> Result:
        argv = [*args, "--token", token or thread_server.token]
        return runner.invoke(app, argv, input=stdin)

    return run


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def make_token(fedsilo: Fedsilo, *args: str) -> dict[str, Any]:
    created: dict[str, Any] = ok_json(fedsilo("token", "create", *args, "--format", "json"))
    return created


# ------------------------------------------------------------------------------ users


@sqlite_only
def test_user_create_list_delete(fedsilo: Fedsilo) -> None:
    result = fedsilo("user", "create", "demo-user")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Created generated user 'demo-user' (id ")

    human = ok_json(
        fedsilo("user", "create", "ada@example.org", "--type", "human", "--format", "json")
    )
    assert human["user_type"] == "human"

    users = ok_json(fedsilo("user", "list", "--format", "json"))
    assert [u["name"] for u in users] == ["admin", "demo-user", "ada@example.org"]
    table = fedsilo("user", "list").stdout
    assert "demo-user" in table and human["id"] in table and "human" in table

    line = one_line_error(fedsilo("user", "create", "demo-user"), 5)
    assert "demo-user" in line

    result = fedsilo("user", "delete", "demo-user")
    assert result.exit_code == 0, result.output
    assert "Deleted user 'demo-user'" in result.stdout
    assert "demo-user" not in fedsilo("user", "list").stdout
    one_line_error(fedsilo("user", "delete", "demo-user"), 4)


@sqlite_only
def test_user_type_is_checked(fedsilo: Fedsilo) -> None:
    result = fedsilo("user", "create", "u1", "--type", "robot")
    assert result.exit_code == 2
    assert "robot" in result.stderr


# ----------------------------------------------------------------------------- tokens


@sqlite_only
def test_token_create_prints_the_secret_alone(fedsilo: Fedsilo) -> None:
    fedsilo("user", "create", "u1")
    result = fedsilo(
        "token", "create", "--user", "u1", "--scope", "create_session",
        "--scope", "read_user_session", "--name", "notebook",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert result.stdout == secret + "\n" and secret.startswith("fs_")
    assert "Created token 'notebook'" in result.stderr
    assert "for user u1, scopes create_session, read_user_session" in result.stderr

    info = ok_json(fedsilo("token", "info", secret, "--format", "json"))
    assert info["user_id"] == "u1"
    assert info["scope"] == "create_session read_user_session"


@sqlite_only
def test_token_create_without_scope_is_least_privilege(fedsilo: Fedsilo) -> None:
    fedsilo("user", "create", "u1")
    created = make_token(fedsilo, "--user", "u1")
    assert created["scopes"] == ["read_user_session"]
    assert created["token_id"] == created["id"]
    info = ok_json(fedsilo("token", "info", "--format", "json", token=created["token"]))
    assert info["role"] == "user"


@sqlite_only
def test_token_create_refusals(fedsilo: Fedsilo) -> None:
    fedsilo("user", "create", "u1")
    line = one_line_error(fedsilo("token", "create", "--user", "u1", "--scope", "read_model"), 2)
    assert "'read_model'" in line and "known: start_session" in line

    line = one_line_error(fedsilo("token", "create", "--user", "u1", "--expires-in-days", "31"), 1)
    assert "30" in line
    one_line_error(fedsilo("token", "create", "--user", "u1", "--no-expiry"), 1)
    one_line_error(fedsilo("token", "create", "--no-expiry", "--expires-in-days", "3"), 2)
    one_line_error(fedsilo("token", "create", "--user", "nobody"), 4)

    # an admin token may never expire
    forever = make_token(fedsilo, "--user", "u1", "--scope", "admin", "--no-expiry")
    assert forever["expires_at"] is None


def test_token_create_help_lists_every_scope() -> None:
    result = runner.invoke(app, ["token", "create", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for scope in Scope:
        assert f"{scope.value}: {SCOPE_HELP[scope]}" in result.stdout
    assert "read_user_session, never admin" in result.stdout


@sqlite_only
def test_token_info(fedsilo: Fedsilo, thread_server: ThreadServer) -> None:
    # default: the token in use
    mine = ok_json(fedsilo("token", "info", "--format", "json"))
    assert mine["role"] == "admin" and mine["user_id"] == "admin"
    table = fedsilo("token", "info").stdout
    assert "token_id" in table and mine["token_id"] in table and "admin" in table

    fedsilo("user", "create", "u1")
    scoped = make_token(fedsilo, "--user", "u1", "--scope", "model_download")
    from_stdin = ok_json(fedsilo("token", "info", "-", "--format", "json", stdin=scoped["token"]))
    assert from_stdin["token_id"] == scoped["id"]
    assert from_stdin["scope"] == "model_download"

    # a scoped token sees itself, not another token
    line = one_line_error(fedsilo("token", "info", thread_server.token, token=scoped["token"]), 1)
    assert thread_server.token not in line
    one_line_error(fedsilo("token", "info", "-", stdin=""), 2)


@sqlite_only
def test_token_list_and_revoke(fedsilo: Fedsilo) -> None:
    fedsilo("user", "create", "u1")
    fedsilo("user", "create", "u2")
    first = make_token(fedsilo, "--user", "u1", "--name", "silo-a", "--scope", "client")
    make_token(fedsilo, "--user", "u2")

    listed = ok_json(fedsilo("token", "list", "--user", "u1", "--format", "json"))
    assert [t["id"] for t in listed] == [first["id"]]
    assert first["token"] not in json.dumps(ok_json(fedsilo("token", "list", "--format", "json")))

    result = fedsilo("token", "revoke", first["id"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Revoked token 'silo-a' (id {first['id']}).\n"
    table = fedsilo("token", "list", "--user", "u1").stdout
    assert first["id"] in table and "revoked" in table and "u1" in table

    line = one_line_error(fedsilo("token", "info", "--format", "json", token=first["token"]), 3)
    assert line == "Error: Token has been revoked."
    one_line_error(fedsilo("token", "revoke", "nope"), 4)


@sqlite_only
def test_a_scoped_token_revokes_itself_only(fedsilo: Fedsilo) -> None:
    fedsilo("user", "create", "u1")
    mine = make_token(fedsilo, "--user", "u1")
    other = make_token(fedsilo, "--user", "u1")
    line = one_line_error(fedsilo("token", "revoke", other["id"], token=mine["token"]), 1)
    assert "403" in line
    line = one_line_error(fedsilo("user", "list", token=mine["token"]), 1)
    assert "admin" in line
    assert fedsilo("token", "revoke", mine["id"], token=mine["token"]).exit_code == 0


# ------------------------------------------------------------------------------ audit


@sqlite_only
def test_audit_list(fedsilo: Fedsilo) -> None:
    fedsilo("user", "create", "u1")
    token = make_token(fedsilo, "--user", "u1")
    fedsilo("token", "revoke", token["id"])

    entries = ok_json(fedsilo("audit", "list", "--format", "json"))
    actions = [(e["action"], e["target"]) for e in entries]
    assert ("user.create", "u1") in actions
    assert ("token.create", token["id"]) in actions
    assert ("token.revoke", token["id"]) in actions

    only = ok_json(fedsilo("audit", "list", "--action", "token", "--format", "json"))
    assert [e["action"] for e in only] == ["token.create", "token.revoke"]
    newest = ok_json(
        fedsilo("audit", "list", "--action", "token", "--limit", "1", "--format", "json")
    )
    assert [e["action"] for e in newest] == ["token.revoke"]
    on_target = ok_json(fedsilo("audit", "list", "--target", "u1", "--format", "json"))
    assert [e["action"] for e in on_target] == ["user.create"]
    by_admin = ok_json(fedsilo("audit", "list", "--user", "admin", "--format", "json"))
    assert len(by_admin) == len(entries)
    later = ok_json(fedsilo("audit", "list", "--since", "2999-01-01T00:00", "--format", "json"))
    assert later == []

    table = fedsilo("audit", "list").stdout
    assert "user.create" in table and "token.revoke" in table and token["id"] in table

    line = one_line_error(fedsilo("audit", "list", "--since", "yesterday"), 2)
    assert "'yesterday'" in line
    assert fedsilo("audit", "list", "--limit", "0").exit_code == 2


@sqlite_only
def test_audit_needs_admin(fedsilo: Fedsilo) -> None:
    fedsilo("user", "create", "u1")
    scoped = make_token(fedsilo, "--user", "u1", "--scope", "read_all_session")
    line = one_line_error(fedsilo("audit", "list", token=scoped["token"]), 1)
    assert "admin" in line


@pytest.mark.parametrize(
    "args", [["user", "list"], ["token", "list"], ["token", "info"], ["audit", "list"]]
)
def test_identity_commands_take_a_ca_bundle(args: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    result = runner.invoke(
        app, [*args, "--url", "https://127.0.0.1:9", "--token", "t", "--ca-cert", str(missing)]
    )
    line = one_line_error(result, 2)
    assert "CA bundle" in line and str(missing) in line
