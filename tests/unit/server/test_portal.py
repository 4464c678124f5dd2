"""The web portal over real HTTP (the in-thread server): cookie signing and its attributes,
CSRF on every form, and pages showing exactly what the signed-in token's scopes allow.

The browser itself is in tests/e2e/test_portal.py; here a plain ``httpx`` client plays the
browser (it keeps cookies and sends ``Accept: text/html``), so each rule is checked on the
wire: headers, status codes and the HTML the server answers.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedsilo.server.portal.plots import histogram, line_plot
from fedsilo.server.portal.session import IDLE_S, PortalSessions

# The portal adds no storage of its own (every read and write is an API route function, tested
# on each backend by the API's tests): one backend is enough here.
ONE_BACKEND = pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)

API = "/api/v1"
HTML = {"Accept": "text/html"}
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def _csrf(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


class Browser:
    """An httpx client that behaves like a browser tab: cookies, Accept: text/html."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, headers=HTML, timeout=30)
        self.csrf = ""

    def sign_in(self, token: str, next_path: str = "/") -> httpx.Response:
        form = self.http.get("/signin", params={"next": next_path})
        assert form.status_code == 200, form.text
        answer = self.http.post(
            "/signin", data={"csrf": _csrf(form), "token": token, "next": next_path}
        )
        if answer.status_code == 303:
            page = self.http.get(answer.headers["location"])
            self.csrf = _csrf(page)
        return answer

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def world(thread_server: Any) -> Iterator[dict[str, Any]]:
    """Users alice (two own sessions) and bob (one), their tokens, and a way to open tabs."""
    admin = httpx.Client(
        base_url=thread_server.url + API,
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=30,
    )
    tabs: list[Browser] = []

    def token(user: str, scopes: list[str]) -> str:
        made = admin.post("/tokens", json={"user_id": user, "scopes": scopes, "name": user})
        assert made.status_code == 201, made.text
        return str(made.json()["token"])

    def session(secret: str, name: str) -> str:
        body = {
            "name": name,
            "package_name": "echo",
            "min_num_clients": 1000,  # never runs
            "num_rounds": 1,
            "model_config": {},
            "data_config": {"columns": ["a"]},
        }
        made = httpx.post(
            thread_server.url + API + "/sessions",
            json=body,
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def tab() -> Browser:
        tabs.append(Browser(thread_server.url))
        return tabs[-1]

    for name in ("alice", "bob"):
        assert admin.post("/users", json={"name": name}).status_code == 201
    owner = ["create_session", "read_user_session", "delete_user_session"]
    alice, bob = token("alice", owner), token("bob", owner)
    yield {
        "url": thread_server.url,
        "admin": thread_server.token,
        "alice": alice,
        "bob": bob,
        "alice_sessions": {session(alice, "a1"), session(alice, "a2")},
        "bob_sessions": {session(bob, "b1")},
        "token": token,
        "tab": tab,
        "api": admin,
        "data_dir": Path(thread_server.app_state.settings.resolved_data_dir()),
    }
    for t in tabs:
        t.close()
    admin.close()


def _listed(page: httpx.Response) -> set[str]:
    return set(re.findall(r'data-session-id="([0-9a-f]+)"', page.text))


# ----------------------------------------------------------------- the cookie


@ONE_BACKEND
def test_sign_in_sets_a_signed_httponly_strict_cookie_that_is_not_the_token(world: Any) -> None:
    tab = world["tab"]()
    answer = tab.sign_in(world["alice"], next_path="/sessions")
    assert answer.status_code == 303 and answer.headers["location"] == "/sessions"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("fedsilo_portal=")
    )
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes and "SameSite=Strict" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert world["alice"] not in value and world["alice"] not in answer.text

    # the key that signs it: in the data dir, readable by the server's user only
    key = world["data_dir"] / "portal_key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32

    assert tab.http.get("/").status_code == 200
    # a tampered signature, or a session id the server never issued, is no session
    session_id, _, signature = value.rpartition(".")
    for forged in (f"{session_id}.{signature[:-2]}xx", f"{'A' * len(session_id)}.{signature}"):
        tab.http.cookies.clear()
        tab.http.cookies.set("fedsilo_portal", forged)
        refused = tab.http.get("/sessions")
        assert refused.status_code == 303 and refused.headers["location"].startswith("/signin")


def test_portal_sessions_check_the_signature_and_expire_when_idle(tmp_path: Path) -> None:
    sessions = PortalSessions(tmp_path)
    session, cookie = sessions.create("fs_secret", "alice")
    assert sessions.resolve(cookie) is session
    assert sessions.resolve(cookie + "x") is None
    other_key = PortalSessions(b"k" * 32)
    assert other_key.resolve(cookie) is None  # signed under another key
    assert sessions.resolve(cookie, now=time.monotonic() + IDLE_S + 1) is None
    assert sessions.resolve(cookie) is None  # and forgotten


@ONE_BACKEND
def test_sign_out_ends_the_session_on_the_server(world: Any) -> None:
    tab = world["tab"]()
    tab.sign_in(world["alice"])
    copied = dict(tab.http.cookies)
    out = tab.post("/signout")
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    # the old cookie, replayed, no longer signs anyone in
    replay = httpx.get(world["url"] + "/sessions", cookies=copied, headers=HTML)
    assert replay.status_code == 303 and replay.headers["location"].startswith("/signin")


@ONE_BACKEND
def test_a_revoked_token_ends_its_portal_session_at_once(world: Any) -> None:
    tab = world["tab"]()
    tab.sign_in(world["bob"])
    me = httpx.post(
        world["url"] + API + "/tokens/info",
        json={"token": world["bob"]},
        headers={"Authorization": f"Bearer {world['bob']}"},
    ).json()
    assert world["api"].delete(f"/tokens/{me['token_id']}").status_code == 200
    page = tab.http.get("/sessions")
    assert page.status_code == 401 and "Token has been revoked." in page.text
    assert "text/html" in page.headers["content-type"]
    assert "fedsilo_portal=;" in page.headers["set-cookie"]  # cleared


@ONE_BACKEND
def test_sign_in_refuses_a_bad_token_with_the_api_detail(world: Any) -> None:
    tab = world["tab"]()
    answer = tab.sign_in("fs_not-a-token")
    assert answer.status_code == 401 and "Invalid token." in answer.text
    assert "fedsilo_portal=" not in answer.headers.get("set-cookie", "")


# ----------------------------------------------------------------- CSRF


@ONE_BACKEND
def test_every_form_needs_the_sessions_csrf_token(world: Any) -> None:
    tab = world["tab"]()
    tab.sign_in(world["admin"])
    for page in ("/", "/users", "/tokens", f"/sessions/{next(iter(world['alice_sessions']))}"):
        forms = re.findall(
            r'<form[^>]*method="post"[^>]*action="([^"]+)"[^>]*>(.*?)</form>',
            tab.http.get(page).text,
            re.DOTALL,
        )
        assert forms, page
        for action, inner in forms:  # every form of every page carries the token
            assert f'name="csrf" value="{tab.csrf}"' in inner, (page, action)
    for csrf in ("", "wrong", None):
        data = {"name": "mallory"} if csrf is None else {"name": "mallory", "csrf": csrf}
        refused = tab.http.post("/users", data=data)
        assert refused.status_code == 403 and "CSRF token" in refused.text, refused.text
    for path in ("/signout", "/tokens", "/users/alice/delete", "/tokens/x/revoke"):
        assert tab.http.post(path, data={"csrf": "wrong"}).status_code == 403, path
    assert "mallory" not in world["api"].get("/users").text
    made = tab.post("/users", {"name": "mallory"})
    assert made.status_code == 303
    assert "mallory" in world["api"].get("/users").text

    # another signed-in browser's token is no good here
    other = world["tab"]()
    other.sign_in(world["admin"])
    assert other.csrf != tab.csrf
    crossed = tab.http.post("/users", data={"name": "trudy", "csrf": other.csrf})
    assert crossed.status_code == 403


@ONE_BACKEND
def test_the_sign_in_form_needs_its_own_signed_nonce(world: Any) -> None:
    http = httpx.Client(base_url=world["url"], headers=HTML)
    # no nonce cookie (a form posted from another site): refused, nobody signed in
    refused = http.post("/signin", data={"csrf": "x", "token": world["alice"]})
    assert refused.status_code == 400 and "another site" in refused.text
    form = http.get("/signin")
    http.cookies.set("fedsilo_signin", "another-nonce")
    refused = http.post("/signin", data={"csrf": _csrf(form), "token": world["alice"]})
    assert refused.status_code == 400
    http.close()


@ONE_BACKEND
def test_a_bearer_token_needs_no_csrf_and_gets_the_api_json_errors(world: Any) -> None:
    bearer = {"Authorization": f"Bearer {world['admin']}"}
    made = httpx.post(world["url"] + "/users", data={"name": "scripted"}, headers=bearer)
    assert made.status_code == 303  # a header is never sent by a browser on its own
    refused = httpx.get(world["url"] + "/users", headers={"Authorization": "Bearer fs_nope"})
    assert refused.status_code == 401 and refused.json() == {"detail": "Invalid token."}
    # the API never reads the portal cookie
    tab = world["tab"]()
    tab.sign_in(world["admin"])
    assert tab.http.get(API + "/users").status_code == 401


# ----------------------------------------------------------------- what a page shows


@ONE_BACKEND
def test_pages_show_what_the_tokens_scopes_allow(world: Any) -> None:
    alice = world["tab"]()
    alice.sign_in(world["alice"])
    assert _listed(alice.http.get("/sessions")) == world["alice_sessions"]
    assert _listed(alice.http.get("/sessions/rows")) == world["alice_sessions"]
    dashboard = alice.http.get("/").text
    assert 'href="/tokens"' not in dashboard and "Generate Access Token" not in dashboard
    assert 'id="count-recent">2<' in dashboard
    theirs = next(iter(world["bob_sessions"]))
    page = alice.http.get(f"/sessions/{theirs}")
    assert page.status_code == 403 and "belongs to another user" in page.text
    for admin_page in ("/tokens", "/users", "/audit"):
        refused = alice.http.get(admin_page)
        assert refused.status_code == 403 and "&#39;admin&#39;" in refused.text, admin_page
    mine = next(iter(world["alice_sessions"]))
    detail = alice.http.get(f"/sessions/{mine}").text
    assert "Delete session" in detail  # delete_user_session, her own, not active
    assert "Cancel session" not in detail and "Download model" not in detail
    assert alice.post(f"/sessions/{theirs}/delete").status_code == 403

    # read_all_session: everyone's, but still no admin pages and no delete of others'
    reader = world["tab"]()
    reader.sign_in(world["token"]("bob", ["read_all_session"]))
    everyone = world["alice_sessions"] | world["bob_sessions"]
    assert _listed(reader.http.get("/sessions")) == everyone
    assert "Delete session" not in reader.http.get(f"/sessions/{mine}").text
    assert reader.http.get("/tokens").status_code == 403

    # the status filter
    assert _listed(reader.http.get("/sessions", params={"status": "running"})) == set()
    assert _listed(reader.http.get("/sessions", params={"status": "created"})) == everyone
    assert reader.http.get("/sessions", params={"status": "bogus"}).status_code == 422

    # a client-only token lists nothing: the sessions page is not even offered
    silo = world["tab"]()
    silo.sign_in(world["token"]("bob", ["client"]))
    assert 'href="/sessions"' not in silo.http.get("/").text
    assert silo.http.get("/sessions").status_code == 403


@ONE_BACKEND
def test_admin_pages_and_the_token_shown_once(world: Any) -> None:
    tab = world["tab"]()
    tab.sign_in(world["admin"])
    made = tab.post(
        "/tokens",
        {"name": "for-alice", "user": "alice", "scopes": ["read_user_session", "client"]},
    )
    assert made.status_code == 200
    secret = re.search(r'id="new-token" readonly value="(fs_[^"]+)"', made.text)
    assert secret, made.text
    listed = tab.http.get("/tokens", params={"user": "alice"}).text
    assert "for-alice" in listed and secret.group(1) not in listed  # never shown again
    too_long = tab.post("/tokens", {"user": "alice", "expires_in_days": "90"})
    assert too_long.status_code == 422 and "at most 30" in too_long.text
    audit = tab.http.get("/audit", params={"action": "token"}).text
    assert "token.create" in audit
    headers = tab.http.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


# ----------------------------------------------------------------- plots


def test_plots_are_well_formed_svg_without_inline_styles() -> None:
    svg = str(line_plot({"loss": [0.7, 0.5, None, 0.3], "acc": [0.5, 0.6, 0.7, 0.8]}, "t"))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and root.get("aria-label") == "t"
    assert "style=" not in svg  # the CSP allows no inline style
    circles = [e for e in root.iter() if e.tag.endswith("circle")]
    assert len(circles) == 7  # the missing value is no point
    bars = histogram([0.0, 1.0, 2.0, 3.0], [2, 5, 1], "h")
    assert len([e for e in ET.fromstring(str(bars)).iter() if e.tag.endswith("rect")]) == 4
    with pytest.raises(ValueError, match="len\\(edges\\) == len\\(counts\\) \\+ 1"):
        histogram([0.0, 1.0], [1, 2], "bad")
    assert "No rounds finished yet." in str(line_plot({"loss": []}, "empty"))
