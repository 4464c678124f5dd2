"""The route x scope matrix: every API route, called over real HTTP by every kind of caller.

The routes come from the app itself (``create_app(settings)``), so a route added later fails
this suite until it declares its requirement (:func:`fedsilo.server.access.requirement_of`)
and has a row in :data:`EXPECTED`. That table is written here by hand from the issue's route
table, independently of the server code: it says who is admitted, and the test checks what
the server answers. Callers: no token; a token of each single scope (``admin`` and ``client``
included); for the owner-only scopes, the same scope held by a user who does not own the
session; revoked, expired and deleted-user tokens.

Only the access outcome is asserted. Admitted means any status but 401/403 (the dummy input
may well get 404, 409 or 422); refused means exactly 401 with the stable ``detail`` of why the
token is not valid, or 403 whose ``detail`` names every scope that would have admitted the
call. Participant routes also need the participant's own credential: the right token with
another participant's credential, or none, is 403.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from fedsilo.client.keys import KeyPair
from fedsilo.scopes import OWNER_SCOPES, Scope
from fedsilo.server.access import requirement_of
from fedsilo.server.app import create_app
from fedsilo.server.settings import Settings
from fedsilo.wire import OCTET_STREAM, PARTICIPANT_HEADER

API = "/api/v1"
#: FastAPI's own documentation routes: starlette Routes with no fedsilo requirement
DOCS_ROUTES = frozenset({"openapi", "swagger_ui_html", "swagger_ui_redirect", "redoc_html"})


# ----------------------------------------------------------------- the expectation


@dataclass(frozen=True)
class Expect:
    """Who a route admits.

    ``scopes``: any of them admits (on any user's session); ``own``: admits only the owner of
    the session in the path; ``anyone``: any valid token; ``public``: no token needed;
    ``participant``: the participant's own credential is needed as well.
    """

    scopes: frozenset[Scope] = frozenset()
    own: Scope | None = None
    anyone: bool = False
    public: bool = False
    participant: bool = False

    @property
    def named(self) -> set[Scope]:
        """The scopes a 403 must name."""
        return set(self.scopes) | ({self.own} if self.own else set())


def needs(*scopes: Scope, own: Scope | None = None, participant: bool = False) -> Expect:
    return Expect(frozenset(scopes), own=own, participant=participant)


ADMIN = needs(Scope.admin)
READ = needs(Scope.read_all_session, own=Scope.read_user_session)
# A silo client reads the session it joins (its package and data_config) and the peers'
# public keys (the sealed relay), so these two also admit 'client'.
VIEW = needs(Scope.read_all_session, Scope.client, own=Scope.read_user_session)
AS_PARTICIPANT = needs(Scope.client, participant=True)
SESSION = f"{API}/sessions/{{session_id}}"
PARTICIPANT = f"{SESSION}/participants/{{participant_id}}"

EXPECTED: dict[tuple[str, str], Expect] = {
    ("GET", "/healthz"): Expect(public=True),
    # a scraper's token needs no more than what the metrics summarise (metrics_public: none)
    ("GET", "/metrics"): needs(Scope.read_all_session),
    ("POST", f"{API}/users"): ADMIN,
    ("GET", f"{API}/users"): ADMIN,
    ("DELETE", f"{API}/users/{{name}}"): ADMIN,
    ("POST", f"{API}/tokens"): ADMIN,
    ("GET", f"{API}/tokens"): ADMIN,
    ("POST", f"{API}/tokens/info"): Expect(anyone=True),  # the caller's own token
    ("DELETE", f"{API}/tokens/{{token_id}}"): ADMIN,  # another token (itself: own test)
    ("GET", f"{API}/audit"): ADMIN,
    ("POST", f"{API}/sessions"): needs(Scope.create_session),
    # read_user_session lists only the user's own sessions (test_a_user_lists_only_...)
    ("GET", f"{API}/sessions"): needs(Scope.read_all_session, Scope.read_user_session),
    ("GET", SESSION): VIEW,
    ("GET", f"{SESSION}/metrics"): READ,
    ("GET", f"{SESSION}/logs"): READ,
    ("GET", f"{SESSION}/participants"): VIEW,
    ("POST", f"{SESSION}/start"): needs(Scope.start_session),
    ("POST", f"{SESSION}/cancel"): needs(Scope.admin, own=Scope.cancel_user_session),
    ("DELETE", SESSION): needs(Scope.admin, own=Scope.delete_user_session),
    ("GET", f"{SESSION}/model"): needs(Scope.model_download, own=Scope.user_model_download),
    # the initial model (a safetensors state dict) of a session not started: its creator's
    # create_session, or admin on any session
    ("PUT", f"{SESSION}/initial-model"): needs(Scope.admin, own=Scope.create_session),
    # the driver (Session.run): its owner's start_session, or admin on any session
    ("POST", f"{SESSION}/driver/tasks"): needs(Scope.admin, own=Scope.start_session),
    ("GET", f"{SESSION}/driver/tasks/{{group}}/replies"): needs(
        Scope.admin, own=Scope.start_session
    ),
    ("POST", f"{SESSION}/driver/rounds"): needs(Scope.admin, own=Scope.start_session),
    ("POST", f"{SESSION}/driver/finish"): needs(Scope.admin, own=Scope.start_session),
    ("POST", f"{SESSION}/participants"): needs(Scope.client),
    ("POST", f"{SESSION}/refusals"): needs(Scope.client),  # a client declining to join
    ("GET", f"{PARTICIPANT}/tasks/next"): AS_PARTICIPANT,
    ("POST", f"{PARTICIPANT}/tasks/{{task_id}}/reply"): AS_PARTICIPANT,
    ("POST", f"{PARTICIPANT}/heartbeat"): AS_PARTICIPANT,
    ("POST", f"{PARTICIPANT}/relay/{{to}}"): AS_PARTICIPANT,
    ("GET", f"{PARTICIPANT}/relay"): AS_PARTICIPANT,
    ("GET", f"{API}/packages"): Expect(anyone=True),
    ("GET", f"{API}/packages/{{name}}/schema"): Expect(anyone=True),
    ("POST", f"{API}/packages"): needs(Scope.custom_model),  # upload a custom package
    ("GET", f"{API}/packages/{{name}}/archive"): needs(Scope.client, Scope.custom_model),
    # The web portal (fedsilo.server.portal): a browser's session cookie stands for its token,
    # and each page declares the requirement of the API route whose function it calls, so a
    # bearer token gets exactly the API's answer (the cookie path: tests/unit/server/
    # test_portal.py).
    ("GET", "/signin"): Expect(public=True),
    ("POST", "/signin"): Expect(public=True),
    ("GET", "/static/{name}"): Expect(public=True),
    ("POST", "/signout"): Expect(anyone=True),
    ("GET", "/"): Expect(anyone=True),
    ("GET", "/sessions"): needs(Scope.read_all_session, Scope.read_user_session),
    ("GET", "/sessions/rows"): needs(Scope.read_all_session, Scope.read_user_session),
    ("GET", "/sessions/{session_id}"): READ,
    ("GET", "/sessions/{session_id}/live"): READ,
    ("GET", "/sessions/{session_id}/model"): needs(
        Scope.model_download, own=Scope.user_model_download
    ),
    ("POST", "/sessions/{session_id}/cancel"): needs(Scope.admin, own=Scope.cancel_user_session),
    ("POST", "/sessions/{session_id}/delete"): needs(Scope.admin, own=Scope.delete_user_session),
    ("GET", "/tokens"): ADMIN,
    ("POST", "/tokens"): ADMIN,
    ("POST", "/tokens/{token_id}/revoke"): ADMIN,  # another token (itself: as the API's)
    ("GET", "/users"): ADMIN,
    ("POST", "/users"): ADMIN,
    ("POST", "/users/{name}/delete"): ADMIN,
    ("GET", "/audit"): ADMIN,
}
#: the portal's routes no token is needed for (its sign-in form and its CSS/JS)
PORTAL_PUBLIC = {"/signin", "/static/{name}"}

#: routes whose admitted call changes the session for good: each call gets a fresh one
FRESH_SESSION = {
    ("POST", f"{SESSION}/cancel"),
    ("DELETE", SESSION),
    ("POST", "/sessions/{session_id}/cancel"),
    ("POST", "/sessions/{session_id}/delete"),
}


# ----------------------------------------------------------------- the app's routes


@dataclass(frozen=True)
class AppRoute:
    method: str
    path: str
    name: str
    requirements: tuple[Any, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


def app_routes() -> list[AppRoute]:
    """Every (method, path) the app serves, with the requirements its dependencies declare.

    FastAPI (0.16x) keeps an included router as one entry of ``app.routes``; its
    ``iter_route_contexts`` yields each route with its full path and the dependant that
    includes router-level dependencies.
    """
    app = create_app(Settings(data_dir=Path("unused-never-started"), admin_token="fs_unused"))
    found: list[AppRoute] = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute):
            assert context.name in DOCS_ROUTES, (
                f"route {context.path!r} ({context.name}) is a {type(context.original_route)}; "
                "expected an APIRoute with a declared requirement, or FastAPI's docs"
            )
            continue
        requirements = tuple(requirement_of(context.dependant))
        for method in sorted(context.methods or ()):
            found.append(AppRoute(method, str(context.path), str(context.name), requirements))
    return found


ROUTES = app_routes()


def test_every_route_declares_a_requirement() -> None:
    missing = [f"{r.method} {r.path} ({r.name})" for r in ROUTES if not r.requirements]
    assert not missing, f"routes with no declared Requirement: {missing}"
    public = [r.path for r in ROUTES if any(q.kind == "public" for q in r.requirements)]
    assert set(public) == {"/healthz", *PORTAL_PUBLIC}


def test_every_route_is_in_the_expectation_table_and_no_other() -> None:
    served = {r.key for r in ROUTES}
    assert not served - EXPECTED.keys(), (
        f"routes missing from EXPECTED (say who may call them): {sorted(served - EXPECTED.keys())}"
    )
    assert not EXPECTED.keys() - served, (
        f"EXPECTED rows no route serves: {EXPECTED.keys() - served}"
    )


# ----------------------------------------------------------------- callers and world


@dataclass(frozen=True)
class Caller:
    label: str
    secret: str | None
    scopes: frozenset[Scope] = frozenset()
    user: str | None = None
    #: the 401 detail (its start) an invalid caller gets; None for a valid token
    invalid: str | None = None

    def holds(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.admin in self.scopes

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"} if self.secret else {}


@dataclass
class World:
    """What the matrix calls on: users alice (owner) and bob, alice's session with two joined
    participants, a victim token and user for the admin-only deletes."""

    http: httpx.Client
    callers: list[Caller]
    session_id: str
    owner: str
    participants: list[tuple[str, str]]  # (id, credential)
    victim_token_id: str
    victim_user: str
    alice_create: Caller
    counter: list[int] = field(default_factory=lambda: [0])

    def unique(self, prefix: str) -> str:
        self.counter[0] += 1
        return f"{prefix}-{self.counter[0]}"


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json()


def _session_body() -> dict[str, Any]:
    # min_num_clients far above the joins: the session stays pending and never runs
    return {
        "name": "matrix",
        "package_name": "echo",
        "min_num_clients": 1000,
        "num_rounds": 1,
        "model_config": {},
        "data_config": {"columns": ["a"]},
    }


PUBLIC_KEY = KeyPair.generate().public_text


def _join_body(client_name: str) -> dict[str, Any]:
    return {
        "public_key": PUBLIC_KEY,
        "client_name": client_name,
        "dataset": {
            "train_rows": 3,
            "test_rows": 0,
            "columns": [{"name": "a", "dtype": "float64"}],
        },
    }


def _mint(http: httpx.Client, admin: str, user: str, scopes: list[str], **extra: Any) -> Any:
    body = {"user_id": user, "name": f"{user}-{'-'.join(scopes)}", "scopes": scopes, **extra}
    return _ok(http.post(f"{API}/tokens", json=body, headers=_bearer(admin)), 201)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _new_session(http: httpx.Client, creator: Caller, start_with: str | None) -> str:
    created = _ok(http.post(f"{API}/sessions", json=_session_body(), headers=creator.headers), 201)
    sid: str = created["id"]
    if start_with is not None:
        _ok(http.post(f"{API}/sessions/{sid}/start", headers=_bearer(start_with)))
    return sid


@pytest.fixture
def world(thread_server: Any) -> Iterator[World]:
    # The matrix fails to authenticate hundreds of times from 127.0.0.1 on purpose; the
    # limiter that would answer 429 has tests of its own.
    thread_server.app_state.auth_limiter.limit = 1_000_000
    admin = thread_server.token
    with httpx.Client(base_url=thread_server.url, timeout=30) as http:
        for name in ("alice", "bob", "victim", "gone"):
            _ok(http.post(f"{API}/users", json={"name": name}, headers=_bearer(admin)), 201)
        # expires in under a second: expired by the time the matrix reaches it
        expiring = _mint(http, admin, "alice", ["read_user_session"], expires_in_days=1e-5)
        expires_at = time.monotonic() + 1e-5 * 86400
        callers = [Caller("no token", None, invalid="Missing bearer token")]
        for scope in Scope:
            user = "admin" if scope is Scope.admin else "alice"
            secret = _mint(http, admin, user, [scope.value])["token"]
            callers.append(Caller(f"{user}:{scope}", secret, frozenset({scope}), user))
        for scope in sorted(OWNER_SCOPES):
            secret = _mint(http, admin, "bob", [scope.value])["token"]
            callers.append(Caller(f"bob:{scope}", secret, frozenset({scope}), "bob"))
        revoked = _mint(http, admin, "alice", ["read_all_session"])
        _ok(http.delete(f"{API}/tokens/{revoked['id']}", headers=_bearer(admin)))
        callers.append(Caller("revoked", revoked["token"], invalid="Token has been revoked."))
        gone = _mint(http, admin, "gone", ["read_all_session"])["token"]
        _ok(http.delete(f"{API}/users/gone", headers=_bearer(admin)))
        callers.append(Caller("deleted user", gone, invalid="The token's user was deleted."))
        callers.append(Caller("expired", expiring["token"], invalid="Token has expired."))
        callers.append(Caller("unknown", "fs_not-a-token", invalid="Invalid token."))

        alice_create = next(c for c in callers if c.label == "alice:create_session")
        sid = _new_session(http, alice_create, start_with=admin)
        silo = _mint(http, admin, "victim", ["client"])["token"]
        participants = []
        for name in ("p1", "p2"):
            joined = _ok(
                http.post(
                    f"{SESSION.format(session_id=sid)}/participants",
                    json=_join_body(name),
                    headers=_bearer(silo),
                ),
                201,
            )
            participants.append((joined["id"], joined["credential"]))
        victim = _mint(http, admin, "victim", ["read_user_session"])
        time.sleep(max(0.0, expires_at - time.monotonic()) + 0.05)
        yield World(
            http=http,
            callers=callers,
            session_id=sid,
            owner="alice",
            participants=participants,
            victim_token_id=victim["id"],
            victim_user="victim",
            alice_create=alice_create,
        )


# ----------------------------------------------------------------- calling a route


def _request(
    world: World, route: AppRoute, caller: Caller, credential: str | None
) -> httpx.Response:
    """Call ``route`` as ``caller`` (participant routes with ``credential``)."""
    sid = world.session_id
    if route.key in FRESH_SESSION:
        sid = _new_session(world.http, world.alice_create, start_with=None)
    (p1, _), (p2, _) = world.participants
    values = {
        "session_id": sid,
        "participant_id": p1,
        "to": p2,
        "task_id": "no-such-task",
        "group": "no-such-group",
        "token_id": world.victim_token_id,
        "name": world.victim_user if route.path.startswith(f"{API}/users") else "echo",
    }
    url = route.path.format(**values)
    headers = dict(caller.headers)
    if credential is not None:
        headers[PARTICIPANT_HEADER] = credential
    kwargs: dict[str, Any] = {}
    if route.key == ("POST", f"{API}/users"):
        kwargs["json"] = {"name": world.unique("made")}
    elif route.key == ("POST", f"{API}/tokens"):
        kwargs["json"] = {"user_id": "victim", "scopes": ["read_user_session"]}
    elif route.key == ("POST", f"{API}/tokens/info"):
        kwargs["json"] = {"token": caller.secret or "fs_none"}
    elif route.key == ("POST", f"{API}/sessions"):
        kwargs["json"] = _session_body()
    elif route.key == ("POST", f"{SESSION}/participants"):
        kwargs["json"] = _join_body(world.unique("joiner"))
    elif route.key == ("POST", f"{SESSION}/refusals"):
        kwargs["json"] = {"client_name": world.unique("refuser"), "reason": "no column 'y'"}
    elif route.path.endswith("/reply") or "/relay/" in route.path or route.method == "PUT":
        # no tag and not a frame: an admitted call gets 404/409/422, and queues nothing
        kwargs["content"] = b"\x00" * 16
        headers["Content-Type"] = OCTET_STREAM
    if route.path.endswith(("/tasks/next", "/relay")):
        kwargs["params"] = {"wait": 0}
    return world.http.request(route.method, url, headers=headers, **kwargs)


def _admitted(expect: Expect, caller: Caller, is_owner: bool) -> bool:
    if expect.public:
        return True
    if caller.invalid is not None:
        return False
    if expect.anyone or any(caller.holds(s) for s in expect.scopes):
        return True
    return expect.own is not None and caller.holds(expect.own) and is_owner


def _problem(
    response: httpx.Response, expect: Expect, caller: Caller, admitted: bool, why: str = ""
) -> str | None:
    """None when the answer is the expected access outcome, else what is wrong."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = str(body.get("detail", "")) if isinstance(body, dict) else response.text
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    if admitted:
        if status in (401, 403):
            return f"expected admitted, got {status}: {detail}"
        return None
    if caller.invalid is not None:
        if status != 401 or not detail.startswith(caller.invalid):
            return f"expected 401 {caller.invalid!r}, got {status}: {detail}"
        return None
    if status != 403:
        return f"expected 403{why}, got {status}: {detail}"
    if why:  # a credential problem, not a scope one
        return None
    unnamed = [s for s in expect.named if f"'{s}'" not in detail]
    if unnamed:
        return f"403 detail does not name {unnamed}: {detail}"
    return None


def _check_route(route: AppRoute, world: World) -> list[str]:
    """What is wrong with ``route``'s answers to every caller (empty when all are right)."""
    expect = EXPECTED[route.key]
    problems: list[str] = []
    (_, own_credential), (_, other_credential) = world.participants
    for caller in world.callers:
        is_owner = caller.user == world.owner and "{session_id}" in route.path
        admitted = _admitted(expect, caller, is_owner)
        variants: list[tuple[str | None, bool, str]] = [(None, admitted, "")]
        if expect.participant:
            # the right credential: admitted iff the token holds 'client'; any other: 403
            variants = [(own_credential, admitted, "")]
            if caller.invalid is None:
                variants += [
                    (other_credential, False, " (another participant's credential)"),
                    (None, False, " (no participant credential)"),
                ]
        for credential, ok, why in variants:
            response = _request(world, route, caller, credential)
            problem = _problem(response, expect, caller, ok, why)
            if problem:
                problems.append(f"{route.method} {route.path} as {caller.label}{why}: {problem}")
    return problems


def test_every_route_admits_exactly_its_callers(world: World) -> None:
    """The whole matrix on one server (per state backend); every wrong cell is reported."""
    problems = [p for route in ROUTES if route.key in EXPECTED for p in _check_route(route, world)]
    assert not problems, f"{len(problems)} wrong answer(s):\n  " + "\n  ".join(problems)
    _check_owner_and_self_service(world)


def _caller(world: World, label: str) -> Caller:
    return next(c for c in world.callers if c.label == label)


def _check_owner_and_self_service(world: World) -> None:
    """What the table's single rows cannot say: a ``read_user_session`` list holds only the
    user's own sessions; a token may inspect and revoke itself but no other; the session
    records its owner's user id, not a token. (Run after the matrix: it revokes a caller.)"""
    http, sid = world.http, world.session_id
    listed = {
        label: [
            s["id"] for s in _ok(http.get(f"{API}/sessions", headers=_caller(world, label).headers))
        ]
        for label in ("alice:read_user_session", "bob:read_user_session", "alice:read_all_session")
    }
    assert sid in listed["alice:read_user_session"] and sid in listed["alice:read_all_session"]
    assert listed["bob:read_user_session"] == []

    admin = _caller(world, "admin:admin")
    users = {u["name"]: u["id"] for u in _ok(http.get(f"{API}/users", headers=admin.headers))}
    assert (
        _ok(http.get(f"{API}/sessions/{sid}", headers=admin.headers))["owner_id"] == users["alice"]
    )

    bob = _caller(world, "bob:read_user_session")
    alice = _caller(world, "alice:read_user_session")
    other = http.post(f"{API}/tokens/info", json={"token": alice.secret}, headers=bob.headers)
    assert other.status_code == 403, other.text
    mine = _ok(http.post(f"{API}/tokens/info", json={"token": bob.secret}, headers=bob.headers))
    other_id = _ok(
        http.post(f"{API}/tokens/info", json={"token": alice.secret}, headers=alice.headers)
    )
    refused = http.delete(f"{API}/tokens/{other_id['token_id']}", headers=bob.headers)
    assert refused.status_code == 403, refused.text
    _ok(http.delete(f"{API}/tokens/{mine['token_id']}", headers=bob.headers))  # itself
    gone = http.get(f"{API}/sessions", headers=bob.headers)
    assert (gone.status_code, gone.json()["detail"]) == (401, "Token has been revoked.")
