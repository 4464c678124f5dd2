"""The hot routes' direct handler (server/api/direct.py): it calls the dependencies the
routes have as mounted in the app, and answers what FastAPI's handler answers."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from fedsilo.client.keys import KeyPair
from fedsilo.server.api.deps import require_participant
from fedsilo.server.api.direct import DirectRoute, direct_plan
from fedsilo.server.api.participants import router as participants_router
from fedsilo.server.api.relay import router
from fedsilo.server.app import create_app
from fedsilo.server.settings import Settings
from fedsilo.wire import OCTET_STREAM, PARTICIPANT_HEADER


def echo_session(api: httpx.Client) -> str:
    body = {
        "name": "relay route",
        "package_name": "echo",
        "min_num_clients": 2,
        "num_rounds": 1,
        "model_config": {"payload_size": 1},
        "data_config": {"columns": ["a"]},
    }
    sid: str = api.post("/sessions", json=body).json()["id"]
    assert api.post(f"/sessions/{sid}/start").status_code == 200
    return sid


def join(api: httpx.Client, sid: str, name: str) -> tuple[str, str]:
    body = {
        "client_name": name,
        "dataset": {"train_rows": 3, "test_rows": 0, "columns": [{"name": "a", "dtype": "f8"}]},
        "public_key": KeyPair.generate().public_text,
    }
    response = api.post(f"/sessions/{sid}/participants", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["credential"]


def test_the_mounted_hot_routes_have_the_dependencies_the_direct_plan_calls() -> None:
    # An app-level dependency (include_router(dependencies=...)) would be in the mounted
    # dependant but not in the route's own: the direct handler would skip it.
    app = create_app(Settings(data_dir=Path("unused-never-started"), admin_token="fs_unused"))
    mounted = {
        (context.path_format, tuple(sorted(context.methods or ()))): context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, DirectRoute)
    }
    assert len(mounted) == len(router.routes) + len(participants_router.routes) == 7
    plans = {
        key: direct_plan(cast(DirectRoute, c.original_route).dependant)
        for key, c in mounted.items()
    }
    # the join (a body) and the list (a sync endpoint) stay FastAPI's
    assert {str(path).rsplit("/", 1)[-1] for (path, _), plan in plans.items() if plan} == {
        "next",
        "heartbeat",
        "reply",
        "relay",
        "{to}",
    }
    for key, plan in plans.items():
        if plan is None:
            continue
        assert [d.call for d in mounted[key].dependant.dependencies] == [
            d.call for d in plan.dependencies
        ]
        # the declared Requirement first (scope 'client'), then the participant's credential
        first, second = plan.dependencies
        assert [str(s) for s in first.call.scopes] == ["client"]  # type: ignore[attr-defined]
        assert second.call is require_participant
        expected = [] if str(key[0]).endswith("/heartbeat") else ["wait"]
        assert [name for name, _ in plan.query] == expected


@pytest.mark.parametrize(
    ("wait", "status"),
    [("0.2", 204), ("1e-1", 204), ("-1", 422), ("inf", 422), ("nan", 422), ("x", 422)],
)
def test_a_query_value_the_direct_path_does_not_take_is_answered_by_fastapi(
    api: httpx.Client, wait: str, status: int
) -> None:
    sid = echo_session(api)
    alice, bob = join(api, sid, "alice"), join(api, sid, "bob")
    response = api.post(
        f"/sessions/{sid}/participants/{alice[0]}/relay/{bob[0]}",
        params={"wait": wait},
        content=b"m",
        headers={PARTICIPANT_HEADER: alice[1], "Content-Type": OCTET_STREAM},
    )
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["detail"].startswith("query.wait: "), response.text


def test_the_credential_is_checked_on_the_direct_path(api: httpx.Client) -> None:
    sid = echo_session(api)
    alice, bob = join(api, sid, "alice"), join(api, sid, "bob")
    path = f"/sessions/{sid}/participants/{alice[0]}/relay"
    refused = api.get(path, params={"wait": "0"}, headers={PARTICIPANT_HEADER: bob[1]})
    assert refused.status_code == 403
    assert f"does not belong to participant {alice[0]}" in refused.json()["detail"]
    anonymous = httpx.get(
        api.base_url.join(path.lstrip("/")),
        params={"wait": "0"},
        headers={PARTICIPANT_HEADER: alice[1]},
    )
    assert anonymous.status_code == 401
    assert (
        api.get(path, params={"wait": "0"}, headers={PARTICIPANT_HEADER: alice[1]}).status_code
        == 204
    )


@pytest.mark.parametrize(
    ("wait", "status"), [(None, 200), ("0", 200), ("-1", 422), ("nan", 422), ("1e400", 422)]
)
def test_a_reply_s_wait_is_validated_alike_on_both_paths(
    api: httpx.Client, wait: str | None, status: int
) -> None:
    sid = echo_session(api)
    alice = join(api, sid, "alice")
    params = {} if wait is None else {"wait": wait}
    response = api.post(
        f"/sessions/{sid}/participants/{alice[0]}/tasks/nosuchtask/reply",
        params=params,
        content=b"",
        headers={PARTICIPANT_HEADER: alice[1], "Content-Type": OCTET_STREAM},
    )
    # a task that is not awaited: 409 once the query passed validation
    assert response.status_code == (409 if status == 200 else 422), response.text
    if status == 422:
        assert response.json()["detail"].startswith("query.wait: "), response.text
