"""The request guard: authentication, then a bounded body, before any route reads a byte.

FastAPI reads a route's JSON body before it resolves the route's dependencies, so a route's
access requirement alone would let an unauthenticated caller make the server read (and
parse) a body of any size. :class:`RequestGuard` is an ASGI middleware in front of every
``/api/v1`` route:

1. it authenticates the request (:func:`fedsilo.server.auth.authenticate`, the same function
   the routes' requirements call; a valid token is then a cache hit there) and answers 401 /
   429 itself, before the body is read;
2. it refuses (422) a query parameter the operation does not declare in the OpenAPI, as a
   body refuses an unknown key: ``?usr=bob`` is a typo to name, not a filter to ignore;
3. it refuses at once (413) a body whose ``Content-Length`` exceeds the route's limit, and
   counts a chunked body as the route reads it, refusing it (413) at the first byte past the
   limit, so the server never holds more than the limit of one request.

The limits (:class:`~fedsilo.server.settings.Settings`): ``max_frame_body_bytes`` for a task
reply (a frame of arrays) and a fast-exchange message (the relay then applies its own,
smaller message limit) and a session's initial model (``PUT .../initial-model``),
``max_json_body_bytes`` for every other route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedsilo.server.auth import authenticate
from fedsilo.server.settings import Settings
from fedsilo.wire import API_PREFIX

__all__ = ["BodyLimit", "RequestGuard", "body_limit", "document_bearer_auth"]

#: routes whose body is a frame (arrays), not JSON
_FRAME_ROUTES = re.compile(
    rf"^{re.escape(API_PREFIX)}/sessions/[^/]+/participants/[^/]+/"
    r"(tasks/[^/]+/reply|relay/[^/]+)$"
)
#: a session's initial model (PUT): a frame of the model's arrays
_MODEL_UPLOAD = re.compile(rf"^{re.escape(API_PREFIX)}/sessions/[^/]+/initial-model$")


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a route's body may have, and the setting that says so."""

    bytes: int
    setting: str

    def refusal(self, size: int, counted: bool) -> HTTPException:
        got = f"{size} bytes so far" if counted else f"Content-Length {size}"
        env = f"FEDSILO_{self.setting.upper()}"
        return HTTPException(
            status_code=413,
            detail=f"The request body is at most {self.bytes} bytes on this route "
            f"({self.setting}, {env}). Got {got}.",
        )


def body_limit(settings: Settings, method: str, path: str) -> BodyLimit:
    """The body limit of the route at ``path``."""
    if (method == "POST" and _FRAME_ROUTES.match(path)) or (
        method == "PUT" and _MODEL_UPLOAD.match(path)
    ):
        return BodyLimit(settings.max_frame_body_bytes, "max_frame_body_bytes")
    return BodyLimit(settings.max_json_body_bytes, "max_json_body_bytes")


class RequestGuard:
    """ASGI middleware: authenticate every ``/api/v1`` request, then bound its body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Built at start: the OpenAPI takes a second to build, which must not stall the
            # event loop under the first request (a long-poll, a task timeout counting).
            _declared_query(scope["app"], "GET", "/")
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            await authenticate(request)
        except HTTPException as exc:
            await _answer(exc, scope, receive, send)
            return
        unknown = _unknown_query(request)
        if unknown is not None:
            await _answer(unknown, scope, receive, send)
            return
        limit = body_limit(self.settings, scope["method"], scope["path"])
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit.bytes:
            await _answer(limit.refusal(int(declared), counted=False), scope, receive, send)
            return
        await self.app(scope, _counting(receive, limit), send)


def _declared_query(app: FastAPI, method: str, path: str) -> set[str] | None:
    """The query parameters the OpenAPI declares for ``method path``; None when no operation
    serves it (the router then answers 404 or 405)."""
    index: list[tuple[re.Pattern[str], dict[str, set[str]]]] | None = getattr(
        app.state, "query_index", None
    )
    if index is None:
        index = []
        paths: dict[str, Any] = app.openapi()["paths"]
        # a path written out (/tokens/info) before a template it also fits (/tokens/{id})
        for template in sorted(paths, key=lambda t: "{" in t):
            source = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            names = {
                verb.upper(): {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
                for verb, op in paths[template].items()
            }
            index.append((re.compile(source), names))
        app.state.query_index = index
    for pattern, operations in index:
        if pattern.fullmatch(path) and method in operations:
            return operations[method]
    return None


def _unknown_query(request: Request) -> HTTPException | None:
    """422 naming the query parameters the operation does not take, else None."""
    given = set(request.query_params.keys())
    if not given:
        return None
    declared = _declared_query(request.app, request.method, request.url.path)
    if declared is None or given <= declared:
        return None
    takes = ", ".join(sorted(declared)) or "none"
    return HTTPException(
        status_code=422,
        detail=f"Unknown query parameter(s) {sorted(given - declared)}; this call takes: {takes}.",
    )


def _counting(receive: Receive, limit: BodyLimit) -> Receive:
    """``receive`` that raises 413 (handled as the route's answer) once the body passes
    ``limit``: a chunked body has no Content-Length to check up front."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit.bytes:
                raise limit.refusal(seen, counted=True)
        return message

    return counted


async def _answer(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    """The error response FastAPI itself would give for ``exc``, sent from here."""
    response = JSONResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
    )
    await response(scope, receive, send)


def document_bearer_auth(app: FastAPI) -> None:
    """Declare in the OpenAPI what :class:`RequestGuard` enforces: every ``/api/v1``
    operation needs ``Authorization: Bearer <token>`` (its scopes are in its description)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        cached = app.openapi_schema is not None
        schema = build()  # FastAPI builds the document once and keeps it
        if not cached:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer"}
            for path, operations in schema["paths"].items():
                if path.startswith(API_PREFIX + "/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
