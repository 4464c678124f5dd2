"""Bounded, validated input (issue 11, item 5) and the error contract (item 6), over real HTTP.

Each refusal is a 4xx whose ``detail`` names the field and the limit; none is a 5xx. Body
limits are checked with the standard library's raw HTTP client, so a request can announce
a body it never sends (the answer must come without the server waiting for it) or send one
in chunks with no length at all.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from fedsilo.server.settings import Settings
from fedsilo.server.state import MEMORY_URL
from fedsilo.wire import MAX_COLUMNS, MAX_ROWS

JSON_LIMIT = 512 << 10
FRAME_LIMIT = 1 << 20


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    """One backend (the store plays no part here) and small limits, to reach them cheaply."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Settings(
        data_dir=tmp_path / "server",
        db_url=MEMORY_URL,
        port=port,
        admin_token="fs_test-admin-token",  # the conftest thread server's
        max_json_body_bytes=JSON_LIMIT,
        max_frame_body_bytes=FRAME_LIMIT,
        max_model_parameters=1_000_000,
    )


def session_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "bounds",
        "package_name": "echo",
        "min_num_clients": 1,
        "num_rounds": 1,
        "model_config": {},
        "data_config": {"columns": ["a"]},
    }
    body.update(changes)
    return body


def refused(response: httpx.Response, *needles: str, status: int = 422) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for needle in needles:
        assert needle in detail, f"{needle!r} not in {detail!r}"
    return detail


# ------------------------------------------------------------------ strict types


@pytest.mark.parametrize("value", [True, "2", 1.5])
def test_an_integer_field_refuses_a_boolean_a_string_and_a_fraction(
    api: httpx.Client, value: Any
) -> None:
    refused(api.post("/sessions", json=session_body(min_num_clients=value)), "min_num_clients")


@pytest.mark.parametrize(("field", "value"), [("local_epochs", True), ("seed", "7")])
def test_a_package_config_keeps_json_types(api: httpx.Client, field: str, value: Any) -> None:
    body = ffnet_session([4])
    body["model_config"][field] = value
    refused(api.post("/sessions", json=body), f"model_config is invalid: {field}")


def test_an_integral_number_is_an_integer(api: httpx.Client) -> None:
    # JSON Schema's integer: 2.0 is one (the OpenAPI says integer, and means JSON's)
    created = api.post("/sessions", json=session_body(min_num_clients=2.0))
    assert created.status_code == 201, created.text
    assert created.json()["min_num_clients"] == 2


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_are_refused_anywhere_in_a_body(api: httpx.Client, literal: str) -> None:
    # Python's JSON reader accepts these literals; the server must not.
    text = json.dumps(session_body(model_config={"task_timeout": 1.0})).replace("1.0", literal)
    response = api.post("/sessions", content=text, headers={"Content-Type": "application/json"})
    refused(response, "model_config.task_timeout", "finite")
    token = f'{{"scopes": ["admin"], "expires_in_days": {literal}}}'
    response = api.post("/tokens", content=token, headers={"Content-Type": "application/json"})
    refused(response, "expires_in_days")


@pytest.mark.parametrize("days", [3e6, 1e308, 3651])
def test_huge_token_lifetimes_are_refused_with_the_limit(api: httpx.Client, days: float) -> None:
    # expires_in_days >= ~3e6 once overflowed a timedelta: a 500
    refused(api.post("/tokens", json={"scopes": ["admin"], "expires_in_days": days}), "3650")


def test_a_task_timeout_is_bounded(api: httpx.Client) -> None:
    config = {"task_timeout": 1e300}
    refused(api.post("/sessions", json=session_body(model_config=config)), "task_timeout")


# ------------------------------------------------------------- names and strings


@pytest.mark.parametrize("bad", ["nul\x00byte", "new\nline", "esc\x1b[2J", "bell\x07", ""])
def test_names_refuse_control_characters(api: httpx.Client, bad: str) -> None:
    refused(api.post("/sessions", json=session_body(name=bad)), "name")
    refused(api.post("/users", json={"name": bad}), "name")
    refused(api.post("/tokens", json={"name": bad, "scopes": ["admin"]}), "name")
    refused(api.post("/sessions", json=session_body(package_name=bad)), "package_name")


def test_names_are_bounded_in_length(api: httpx.Client) -> None:
    refused(api.post("/users", json={"name": "u" * 201}), "name", "200")
    assert api.post("/users", json={"name": "u" * 200}).status_code == 201


def test_a_description_may_have_lines_but_no_nul(api: httpx.Client) -> None:
    ok = api.post("/sessions", json=session_body(description="line one\nline two\ttab"))
    assert ok.status_code == 201, ok.text
    refused(api.post("/sessions", json=session_body(description="a\x00b")), "description")


# -------------------------------------------------------------- join summaries


def join_body(**dataset: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "train_rows": 10,
        "test_rows": 0,
        "columns": [{"name": "a", "dtype": "float64"}],
    }
    summary.update(dataset)
    return {"client_name": "silo", "dataset": summary, "public_key": "A" * 43}


@pytest.fixture
def session_id(api: httpx.Client) -> str:
    created = api.post("/sessions", json=session_body())
    assert created.status_code == 201, created.text
    sid: str = created.json()["id"]
    return sid


def test_a_join_summary_bounds_its_rows(api: httpx.Client, session_id: str) -> None:
    joins = f"/sessions/{session_id}/participants"
    refused(api.post(joins, json=join_body(train_rows=2**70)), "train_rows", str(MAX_ROWS))
    refused(api.post(joins, json=join_body(test_rows=MAX_ROWS + 1)), "test_rows")
    refused(api.post(joins, json=join_body(train_rows=True)), "train_rows")
    assert api.post(joins, json=join_body(train_rows=MAX_ROWS)).status_code == 201


def test_a_join_summary_bounds_its_columns(api: httpx.Client, session_id: str) -> None:
    joins = f"/sessions/{session_id}/participants"
    columns = [{"name": f"c{i}", "dtype": "f8"} for i in range(MAX_COLUMNS + 1)]
    columns[0]["name"] = "a"
    refused(api.post(joins, json=join_body(columns=columns)), "columns", str(MAX_COLUMNS))
    # 200k columns: more than this server's JSON body limit, refused before it is parsed
    many = [{"name": f"c{i}", "dtype": "f8"} for i in range(200_000)]
    refused(api.post(joins, json=join_body(columns=many)), "max_json_body_bytes", status=413)
    bad_dtype = [{"name": "a", "dtype": "f8"}, {"name": "c", "dtype": "\x00"}]
    refused(api.post(joins, json=join_body(columns=bad_dtype)), "dtype")
    assert api.post(joins, json=join_body(columns=columns[:MAX_COLUMNS])).status_code == 201


# ------------------------------------------------------------------- model size


def ffnet_session(hidden: list[int]) -> dict[str, Any]:
    model_config = {
        "model": {"params": {"input_size": 2, "hidden_layer_sizes": hidden, "output_size": 2}},
        "ml_task": "classification",
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
    }
    data_config = {"predictors": ["a", "b"], "target": "y"}
    return session_body(package_name="ffnet", model_config=model_config, data_config=data_config)


def test_a_model_too_large_is_refused_at_creation_naming_the_limit(api: httpx.Client) -> None:
    # 4e12 parameters: refused from the config, nothing allocated
    huge = api.post("/sessions", json=ffnet_session([2_000_000, 2_000_000]))
    detail = refused(huge, "max_model_parameters", "1,000,000")
    assert "4,000,012,000,002" in detail  # the count, computed without torch
    assert api.post("/sessions", json=ffnet_session([100, 100])).status_code == 201


# ---------------------------------------------------------------- body limits


def raw_connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)


def announce(url: str, path: str, length: int, token: str | None) -> tuple[int, dict[str, Any]]:
    """POST headers announcing ``length`` body bytes, none sent: the answer must not wait."""
    conn = raw_connection(url)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        if token is not None:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def stream_chunks(url: str, path: str, token: str, total: int) -> tuple[int, dict[str, Any]]:
    """POST ``total`` bytes chunked (no Content-Length) until the server answers."""
    conn = raw_connection(url)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        chunk = b" " * 8192
        sent = 0
        try:
            while sent < total:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the whole body went out
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_an_announced_body_over_the_limit_is_refused_before_it_is_sent(
    thread_server: Any,
) -> None:
    started = time.monotonic()
    status, body = announce(thread_server.url, "/api/v1/sessions", 10**12, thread_server.token)
    assert status == 413
    assert "max_json_body_bytes" in body["detail"] and str(JSON_LIMIT) in body["detail"]
    assert time.monotonic() - started < 5


def test_a_chunked_body_is_counted_as_it_streams(thread_server: Any) -> None:
    status, body = stream_chunks(
        thread_server.url, "/api/v1/sessions", thread_server.token, 4 * JSON_LIMIT
    )
    assert status == 413
    assert "max_json_body_bytes" in body["detail"]


def test_a_reply_frame_has_its_own_limit(thread_server: Any) -> None:
    path = "/api/v1/sessions/0123456789/participants/p/tasks/t/reply"
    status, body = announce(thread_server.url, path, FRAME_LIMIT + 1, thread_server.token)
    assert status == 413
    assert "max_frame_body_bytes" in body["detail"]


@pytest.mark.parametrize("token", [None, "fs_not-a-token"])
def test_authentication_comes_before_the_body(thread_server: Any, token: str | None) -> None:
    # an unauthenticated caller cannot make the server read (or wait for) a body at all
    for path in ("/api/v1/sessions", "/api/v1/sessions/0123456789/participants/p/relay/q"):
        started = time.monotonic()
        status, body = announce(thread_server.url, path, 1_000, token)
        assert status == 401, body
        assert time.monotonic() - started < 5


# ------------------------------------------------------------- the error contract


def test_405_names_every_method_of_the_path(api: httpx.Client, session_id: str) -> None:
    response = api.put(f"/sessions/{session_id}")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    assert isinstance(response.json()["detail"], str)
    assert api.delete("/sessions").headers["allow"] == "GET, POST"


@pytest.fixture
def openapi(thread_server: Any) -> Iterator[dict[str, Any]]:
    with httpx.Client(base_url=thread_server.url) as http:
        yield http.get("/openapi.json").json()


def test_every_error_is_declared_with_the_one_error_schema(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    assert openapi["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    detail = openapi["components"]["schemas"]["ErrorBody"]["properties"]["detail"]
    assert detail["type"] == "string"
    for path, operations in openapi["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, operation in operations.items():
            assert operation["security"] == [{"bearer": []}], f"{method.upper()} {path}"
            responses = operation["responses"]
            for code in ("401", "403", "422", "429", "503"):
                assert code in responses, f"{method.upper()} {path} does not declare {code}"
            if "requestBody" in operation:
                assert {"400", "413"} <= responses.keys(), f"{method.upper()} {path}"
            for code, response in responses.items():
                if int(code) < 400 or code == "410":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


def test_an_unknown_query_parameter_is_named_not_ignored(api: httpx.Client) -> None:
    detail = refused(api.get("/audit", params={"usr": "bob"}), "'usr'", "user", "action")
    assert "Unknown query parameter" in detail
    assert api.get("/audit", params={"user": "bob"}).status_code == 200


def test_a_validation_error_is_a_string_as_documented(api: httpx.Client) -> None:
    detail = refused(api.post("/sessions", json={"name": "x"}), "package_name", "min_num_clients")
    assert "Field required" in detail
