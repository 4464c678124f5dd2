"""The one HTTP client the SDK, the client runtime and the CLI share.

It adds the bearer token, prefixes ``/api/v1``, and turns error responses into the
:mod:`fedsilo.errors` classes with the server's ``detail``. Connection failures become
:class:`~fedsilo.errors.ServerUnavailable`, which callers that must survive a server restart
(the client runtime) catch and retry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from fedsilo.errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDenied,
    ServerUnavailable,
    ValidationError,
)
from fedsilo.wire import API_PREFIX, OCTET_STREAM

__all__ = ["ApiClient", "resolve_token", "resolve_url"]

DEFAULT_URL = "http://127.0.0.1:8765"

_ERRORS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
}


def resolve_url(url: str | None) -> str:
    """``url``, else ``$FEDSILO_URL``, else the default local server."""
    return (url or os.environ.get("FEDSILO_URL") or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None) -> str:
    """``token``, else ``$FEDSILO_TOKEN``; raises when neither is set."""
    resolved = token or os.environ.get("FEDSILO_TOKEN")
    if not resolved:
        raise AuthenticationError(
            401, "No token given: pass --token / token= or set FEDSILO_TOKEN."
        )
    return resolved


class ApiClient:
    """Authenticated JSON / frame calls against one fedsilo server.

    Parameters
    ----------
    url : str
        Server base URL, e.g. ``http://127.0.0.1:8765``.
    token : str
        Bearer token.
    transport : httpx.BaseTransport, optional
        Lets tests drive the app in-process (``httpx.ASGITransport`` does not serve sync
        clients, so tests use ``fastapi.testclient``'s transport or a real server).
    timeout : float
        Seconds for connect/read of ordinary calls; long-polls add their ``wait``.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request to ``/api/v1{path}``; raise the matching error on a bad status.

        Statuses in ``ok`` are returned as they are (callers that expect 204 or 410 add them).
        ``headers`` are added to the client's own (a participant call sends its credential).
        """
        merged = dict(headers or {})
        if content is not None:
            merged["Content-Type"] = OCTET_STREAM
        try:
            response = self._http.request(
                method,
                API_PREFIX + path,
                json=json,
                content=content,
                params=params,
                headers=merged or None,
                timeout=timeout if timeout is not None else self._timeout,
            )
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ServerUnavailable(f"cannot reach fedsilo server at {self.url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise ServerUnavailable(f"fedsilo server at {self.url} timed out: {exc}") from exc
        if response.status_code in ok:
            return response
        raise error_from_response(response)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    def healthz(self) -> dict[str, Any]:
        try:
            response = self._http.get("/healthz")
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach fedsilo server at {self.url}: {exc}") from exc
        result: dict[str, Any] = response.json()
        return result


def error_from_response(response: httpx.Response) -> APIError:
    """The :class:`APIError` subclass for ``response``'s status, carrying its ``detail``."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text or response.reason_phrase
    cls = _ERRORS.get(response.status_code, APIError)
    return cls(response.status_code, detail)
