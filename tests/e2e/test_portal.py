"""The web portal in a real headless Chromium against a real ``fedsilo server start`` process.

Sign in with the admin token, generate a token from the dashboard, create a user and a
scoped token for it, revoke that token, watch a real two-client ffnet session (real
``fedsilo client train`` processes) go from pending to completed on its detail page with the
round counter moving, look at its metrics plot, download its model, sign out; then a token
lacking ``read_all_session`` sees only its own user's sessions.

The browser is Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it
when root), driven by Playwright with ``executable_path``: no browser is downloaded. Each page
is saved as a PNG under ``docs/screenshots/`` (the README shows two of them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import fedsilo
from fedsilo.data.synth import write_sample_data
from fedsilo.runners.local import ServerProcess, start_client, start_eda_client, start_server

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM = os.environ.get("FEDSILO_CHROMIUM") or shutil.which("chromium")
ROUNDS = 6
#: small batches: a round takes long enough (seconds) for the page, polling every 0.5 s, to
#: show the round counter moving
BATCH_SIZE = 16
MODEL_CONFIG: dict[str, Any] = {
    "experiment_name": "portal",
    "experiment_description": "two silos in the browser",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


def _unavailable(reason: str) -> None:
    """Skip, naming what is missing; fail instead where the browser must be (.ci/run as root
    sets FEDSILO_REQUIRE_BROWSER)."""
    if os.environ.get("FEDSILO_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (FEDSILO_REQUIRE_BROWSER is set: the portal tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        _unavailable("no chromium on PATH: apt-get install -y chromium (.ci/run does, as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _sign_in(page: Any, url: str, token: str) -> None:
    page.goto(url + "/")
    assert page.url.startswith(url + "/signin"), page.url  # signed out: sent to sign in
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/")


def _watch(page: Any, timeout: float) -> list[tuple[str, int]]:
    """The (status, round) the detail page shows, as it changes, until it says completed."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (
            page.locator("#session-status").inner_text(),
            int(page.locator("#session-round").inner_text()),
        )
        if not seen or seen[-1] != state:
            seen.append(state)
        if state[0] in ("completed", "failed", "canceled"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"session not completed after {timeout} s; the page showed {seen}")


def _session(
    server: ServerProcess, analyst: str, request: pytest.FixtureRequest
) -> fedsilo.Session:
    client = fedsilo.connect(server.url, analyst)
    request.addfinalizer(client.close)
    return client.create_fl_session(
        name="portal e2e",
        description="two silos, watched in the browser",
        min_num_clients=2,
        num_rounds=ROUNDS,
        package_name="ffnet",
        model_config=MODEL_CONFIG,
        data_config=DATA_CONFIG,
    ).start()


@pytest.mark.slow
def test_the_portal_in_chromium(
    tmp_path: Path, browser: Any, scoped_tokens: Any, request: pytest.FixtureRequest
) -> None:
    files = write_sample_data(tmp_path / "data")
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        url, admin = server.url, server.admin_token
        analyst = scoped_tokens.analyst(url, admin, user="analyst")
        silos = [scoped_tokens.client(url, admin, f"silo{i}") for i in range(2)]
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        request.addfinalizer(context.close)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # sign-in page, then in as admin; a wrong token is refused with the API's detail
        page.goto(url + "/signin")
        _shot(page, "signin")
        page.get_by_label("Access token").fill("fs_not-a-token")
        page.get_by_role("button", name="Sign in").click()
        assert page.locator("#signin-error").inner_text() == "Invalid token."
        _sign_in(page, url, admin)
        cookie = next(c for c in context.cookies() if c["name"] == "fedsilo_portal")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert admin not in cookie["value"]

        # Generate Access Token on the dashboard: shown once, with a copy button
        page.get_by_label("Name", exact=True).fill("from-the-dashboard")
        page.get_by_role("button", name="Generate token").click()
        secret = page.locator("#new-token").input_value()
        assert secret.startswith("fs_")
        page.get_by_role("button", name="Copy").click()
        _shot(page, "token-created")
        info = httpx.post(
            f"{url}/api/v1/tokens/info",
            json={"token": secret},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert info.status_code == 200 and info.json()["scope"] == "read_user_session", info.text

        # a user, a scoped token of it, revoked again
        page.get_by_role("link", name="Users").click()
        page.get_by_label("Name").fill("carol")
        page.get_by_role("button", name="Create user").click()
        assert page.locator('tr[data-user="carol"]').count() == 1
        _shot(page, "users")
        page.get_by_role("link", name="Tokens").click()
        page.get_by_label("Name", exact=True).fill("carol-reader")
        page.get_by_label("User (name; empty: you)").fill("carol")
        page.locator("#scope-create_session").check()
        page.get_by_role("button", name="Generate token").click()
        carol_secret = page.locator("#new-token").input_value()
        carol_id = page.locator("#new-token-id").inner_text()
        page.get_by_role("link", name="Token Management").click()
        row = page.locator(f'#user-tokens tr[data-token-id="{carol_id}"]')
        assert "create_session" in row.inner_text() and "active" in row.inner_text()
        _shot(page, "tokens")
        row.get_by_role("button", name="Revoke").click()
        assert "revoked" in page.locator(f'tr[data-token-id="{carol_id}"]').inner_text()
        gone = httpx.get(
            f"{url}/api/v1/sessions", headers={"Authorization": f"Bearer {carol_secret}"}
        )
        assert (gone.status_code, gone.json()["detail"]) == (401, "Token has been revoked.")

        # a real session: the detail page follows it from pending to completed
        session = _session(server, analyst, request)
        page.goto(f"{url}/sessions")
        assert page.locator(f'tr[data-session-id="{session.id}"]').count() == 1
        page.goto(f"{url}/sessions/{session.id}")
        assert page.locator("#session-status").inner_text() == "pending"
        clients = [
            start_client(
                session.id,
                str(files[f"train_silo{i}.parquet"]),
                str(files["test.parquet"]),
                BATCH_SIZE,
                f"silo{i}",
                url,
                silos[i],
                log_path=tmp_path / f"client{i}.log",
            )
            for i in range(2)
        ]
        # an EDA session beside it, on the same silos (results: describe table, histograms)
        eda = fedsilo.connect(url, analyst)
        request.addfinalizer(eda.close)
        eda_session = eda.create_eda_session(
            name="portal eda",
            data_config={"dataset_one": ["x0", "x1"], "dataset_two": ["x0", "x1"]},
        ).start()
        clients += [
            start_eda_client(
                eda_session.id,
                files[f"train_silo{i}.parquet"],
                f"dataset_{name}",
                url,
                silos[i],
                log_path=tmp_path / f"eda{i}.log",
            )
            for i, name in enumerate(("one", "two"))
        ]
        for proc in clients:
            request.addfinalizer(proc.stop)
        seen = _watch(page, timeout=120)
        assert seen[0] == ("pending", 0) and seen[-1] == ("completed", ROUNDS), seen
        rounds = [r for _, r in seen]
        assert rounds == sorted(rounds) and len(set(rounds)) >= 3, seen  # it moved, in steps
        assert [c.wait(timeout=60) for c in clients] == [0, 0, 0, 0]

        # its metrics plot, tables and participants (shapes and dtypes, never values)
        page.reload()
        plot = page.locator("#metrics svg.plot").first
        assert plot.get_attribute("aria-label") == "Federated loss per round"
        points = plot.locator("circle").count()  # a point per round of each loss curve
        assert points >= ROUNDS and points % ROUNDS == 0, points
        assert page.locator("#federated-metrics tbody tr").count() == ROUNDS
        assert page.locator("#client-metrics tbody tr").count() == 2 * ROUNDS
        participants = page.locator("#participants").inner_text()
        assert "silo0" in participants and "float64" in participants
        _shot(page, "session-detail")

        # the model, as the API serves it
        with page.expect_download() as download:
            page.locator("#download-model").click()
        saved = Path(download.value.path())
        api_model = httpx.get(
            f"{url}/api/v1/sessions/{session.id}/model",
            headers={"Authorization": f"Bearer {analyst}"},
        )
        assert saved.read_bytes() == api_model.content and len(api_model.content) > 100

        eda_session.wait(timeout=60, progress=False)
        page.goto(f"{url}/sessions/{eda_session.id}")
        results = page.locator("section.eda")
        assert results.count() == 3  # dataset_one, dataset_two, pooled
        assert "mean" in results.first.locator("table").inner_text()
        assert results.first.locator("svg.plot").count() == 2  # x0, x1
        _shot(page, "eda-results")

        page.goto(f"{url}/sessions")
        assert "completed" in page.locator(f'tr[data-session-id="{session.id}"]').inner_text()
        _shot(page, "sessions")
        page.goto(f"{url}/audit")
        assert "token.revoke" in page.locator("#audit").inner_text()
        _shot(page, "audit")
        page.goto(url + "/")
        _shot(page, "dashboard")

        # narrow screen: the detail page still lays out in one column
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{url}/sessions/{session.id}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, width
        _shot(page, "session-detail-narrow")
        page.set_viewport_size({"width": 1280, "height": 900})

        # sign out: the cookie no longer signs in
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(url + "/signin")
        page.goto(f"{url}/sessions")
        assert page.url.startswith(url + "/signin")

        # read_user_session without read_all_session: only the user's own sessions
        bob = scoped_tokens(url, admin, ["read_user_session"], "bob")
        _sign_in(page, url, bob)
        page.goto(f"{url}/sessions")
        assert page.locator(f'tr[data-session-id="{session.id}"]').count() == 0
        assert "No sessions." in page.locator("#sessions").inner_text()
        assert page.get_by_role("link", name="Tokens").count() == 0  # no admin pages
        answer = page.goto(f"{url}/sessions/{session.id}")
        assert answer is not None and answer.status == 403
        assert "belongs to another user" in page.locator(".alert").inner_text()
        page.locator("#main").get_by_role("link", name="Dashboard").click()
        page.get_by_role("button", name="Sign out").click()
        # the owner, through the link `fedsilo demo` prints: the token in the fragment
        link = f"{url}/signin?next=/sessions/{session.id}#token={analyst}"
        page.goto(link)
        page.wait_for_url(f"{url}/sessions/{session.id}")
        assert page.locator("#session-status").inner_text() == "completed"
        assert "#token" not in page.url
        page.goto(f"{url}/sessions")
        assert page.locator(f'tr[data-session-id="{session.id}"]').count() == 1
        assert not errors, errors
