"""``GET /metrics`` over real HTTP, parsed with prometheus_client's own parser (issue 11, item 7).

A one-round FedAvg session (the probe package's shared round loop) with two honest raw-HTTP
silos and two whose fit replies fail their task (NaN weights, a 1e9 ``num_examples``) must
show: one round completed, those two rejections under their reasons, a latency observation
per reply, and the session under ``completed``; a bad token counts as a failed
authentication. Access: a ``read_all_session`` token (or admin), or none with
``metrics_public``.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedsilo.federation import Failure, Reply, SessionContext, Task
from fedsilo.federation.expect import Count, ReplySpec, screen
from fedsilo.federation.task import Participant
from fedsilo.server.metrics import REJECTION_REASONS, rejection_reason
from fedsilo.strategies import get_strategy
from fedsilo.wire import DatasetSummary
from fedsilo.workflows import RoundPlan, Start, run_rounds

ROWS = 5
SIZE = 4


def scrape(url: str, token: str | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` parsed: (sample name, sorted labels) -> value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def honest(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {"w": arrays["w"] + np.float32(1)}, {"num_examples": ROWS}


def nan_weights(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {"w": np.full(SIZE, np.nan, np.float32)}, {"num_examples": ROWS}


def huge_count(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {"w": arrays["w"]}, {"num_examples": 10**9}


def answer(silo: Any, helpers: Any, fit: Any) -> None:
    response = silo.next()
    while response.status_code in (200, 204):
        if response.status_code == 204:
            response = silo.next()
            continue
        task_id, arrays, header = helpers.task_of(response)
        if header.kind == "fit":
            out, meta = fit(arrays)
        else:
            out, meta = {}, {"test_loss": 1.0, "test_num_examples": ROWS}
        response = silo.reply(task_id, out, meta, wait=10)


def test_metrics_count_sessions_rounds_latency_rejections_and_auth_failures(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    url, admin = thread_server.url, thread_server.token
    before = scrape(url, admin)
    assert before[("fedsilo_rounds_completed_total", ())] == 0
    for reason in REJECTION_REASONS:
        assert before[("fedsilo_replies_rejected_total", (("reason", reason),))] == 0

    def workflow(ctx: SessionContext) -> None:
        plan = RoundPlan(
            strategy=get_strategy("FedAvg", {"min_fit_clients": 2}),
            start=lambda _: Start({"w": np.zeros(SIZE, dtype=np.float32)}),
            seed=0,
        )
        probe.seen["result"] = run_rounds(ctx, plan)

    probe.workflow = workflow
    fits = {"good-1": honest, "good-2": honest, "bad-nan": nan_weights, "bad-count": huge_count}
    sid = helpers.create_session(api, package="probe", clients=len(fits))
    members = [silos(sid, name, ROWS) for name in fits]
    for silo in members:
        assert silo.join().status_code == 201
    threads = [threading.Thread(target=answer, args=(s, helpers, fits[s.name])) for s in members]
    for thread in threads:
        thread.start()
    assert probe.done.wait(30)
    for thread in threads:
        thread.join(timeout=30)
    helpers.wait_until(
        lambda: api.get(f"/sessions/{sid}").json()["status"] == "completed", what="completed"
    )
    # A token that does not authenticate, twice.
    for _ in range(2):
        assert (
            httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer fs_nope"}).status_code
            == 401
        )

    after = scrape(url, admin)
    assert after[("fedsilo_rounds_completed_total", ())] == 1
    rejected = {
        reason: after[("fedsilo_replies_rejected_total", (("reason", reason),))]
        for reason in REJECTION_REASONS
    }
    assert rejected == {**dict.fromkeys(REJECTION_REASONS, 0.0), "non_finite": 1, "count": 1}
    # Every reply a client sent was timed: four fits, and the evaluations of the round.
    fit_count = after[("fedsilo_task_latency_seconds_count", (("kind", "fit"),))]
    assert fit_count == 4
    fit_sum = after[("fedsilo_task_latency_seconds_sum", (("kind", "fit"),))]
    assert 0 <= fit_sum < 30
    assert after[("fedsilo_task_latency_seconds_bucket", (("kind", "fit"), ("le", "+Inf")))] == 4
    assert after[("fedsilo_authentication_failures_total", ())] == 2
    sessions = {
        status: after[("fedsilo_sessions", (("status", status),))]
        for status in ("created", "pending", "running", "completed", "failed", "canceled")
    }
    assert sessions == {**dict.fromkeys(sessions, 0.0), "completed": 1}


@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
def test_metrics_need_read_all_session_by_default(thread_server: Any, scoped_tokens: Any) -> None:
    url = thread_server.url
    assert httpx.get(f"{url}/metrics").status_code == 401
    reader = scoped_tokens(url, thread_server.token, ["read_all_session"], "scraper")
    own_only = scoped_tokens(url, thread_server.token, ["read_user_session"], "analyst")
    forbidden = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {own_only}"})
    assert forbidden.status_code == 403
    assert "read_all_session" in forbidden.json()["detail"]
    assert ("fedsilo_sessions", (("status", "created"),)) in scrape(url, reader)


@pytest.fixture
def public_metrics(server_settings: Any) -> Any:
    server_settings.metrics_public = True
    return server_settings


@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
def test_metrics_public_serves_without_a_token(public_metrics: Any, thread_server: Any) -> None:
    assert ("fedsilo_authentication_failures_total", ()) in scrape(thread_server.url, None)
    schema = httpx.get(f"{thread_server.url}/openapi.json").json()
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


# ------------------------------------------------- reasons, from the checks themselves

PARTICIPANT = Participant(
    id="p1",
    client_name="silo",
    dataset=DatasetSummary(train_rows=ROWS, test_rows=ROWS, columns=[]),
)
SPEC = ReplySpec.like(
    {"w": np.zeros(SIZE, np.float32)}, counts={"num_examples": Count("train_rows")}
)


@pytest.mark.parametrize(
    ("arrays", "meta", "reason"),
    [
        ({}, {"num_examples": 1}, "missing_array"),
        (
            {"w": np.zeros(SIZE, np.float32), "x": np.zeros(1)},
            {"num_examples": 1},
            "unexpected_array",
        ),
        ({"w": np.zeros(SIZE + 1, np.float32)}, {"num_examples": 1}, "shape"),
        ({"w": np.zeros(SIZE, np.float64)}, {"num_examples": 1}, "dtype"),
        ({"w": np.full(SIZE, np.inf, np.float32)}, {"num_examples": 1}, "non_finite"),
        ({"w": np.zeros(SIZE, np.float32)}, {"num_examples": True}, "count"),
        ({"w": np.zeros(SIZE, np.float32)}, {}, "count"),
        ({"w": np.zeros(SIZE, np.float32)}, {"num_examples": ROWS + 1}, "count"),
    ],
)
def test_each_check_of_a_reply_has_its_reason_label(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], reason: str
) -> None:
    task = Task(to=PARTICIPANT, kind="fit", round=1, arrays={}, expect=SPEC)
    outcome = screen(
        task, Reply(PARTICIPANT, meta, arrays, kind="fit", round=1), PARTICIPANT.dataset
    )
    assert isinstance(outcome, Failure) and outcome.cause == "malformed"
    assert rejection_reason(outcome.reason) == reason
