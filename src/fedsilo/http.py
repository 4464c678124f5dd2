"""The one HTTP client the SDK, the client runtime and the CLI share.

It adds the bearer token, prefixes ``/api/v1``, and turns error responses into the
:mod:`fedsilo.errors` classes with the server's ``detail``. Connection failures become
:class:`~fedsilo.errors.ServerUnavailable`, which callers that must survive a server restart
(the client runtime) catch and retry.

TLS: an ``https://`` server is verified against the CA bundle given as ``ca_cert`` (the CLI's
``--ca-cert``), else ``$FEDSILO_CA_BUNDLE``, else httpx's default trust store. A certificate
that does not verify is a :class:`~fedsilo.errors.ConfigError` (retrying cannot fix it), not
a :class:`~fedsilo.errors.ServerUnavailable`.
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from fedsilo.errors import (
    APIError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PermissionDenied,
    ServerUnavailable,
    ValidationError,
)
from fedsilo.keepalive import KeepAlive, KeepAliveResponse
from fedsilo.wire import API_PREFIX, OCTET_STREAM

__all__ = ["CA_BUNDLE_ENV", "ApiClient", "resolve_token", "resolve_url", "resolve_verify"]

DEFAULT_URL = "http://127.0.0.1:8765"
#: the environment variable naming the CA bundle (PEM) an https server is verified against
CA_BUNDLE_ENV = "FEDSILO_CA_BUNDLE"

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


def resolve_verify(ca_cert: str | os.PathLike[str] | None = None) -> ssl.SSLContext | bool:
    """How httpx verifies an https server: trust exactly the CA bundle ``ca_cert``, else
    ``$FEDSILO_CA_BUNDLE``; ``True`` (httpx's default trust store) when neither is set.

    Raises
    ------
    ConfigError
        When the bundle cannot be read or holds no certificate.
    """
    source = "ca_cert (--ca-cert)"
    if ca_cert is None:
        ca_cert = os.environ.get(CA_BUNDLE_ENV) or None
        source = CA_BUNDLE_ENV
    if ca_cert is None:
        return True
    try:
        return ssl.create_default_context(cafile=os.fspath(ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"The CA bundle {source} = {os.fspath(ca_cert)!r} cannot be used: {exc}. "
            "Expected a readable PEM file of CA certificates."
        ) from None


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
    ca_cert : path, optional
        CA bundle (PEM) to verify an https server with; see :func:`resolve_verify`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        ca_cert: str | os.PathLike[str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=timeout,
            # only an https URL reads the bundle (a given transport brings its own TLS)
            verify=resolve_verify(ca_cert) if _is_https(self.url, transport) else True,
        )
        parts = urlsplit(self.url)
        self._keepalive: KeepAlive | None = None
        if (
            transport is None
            and parts.scheme.lower() == "http"
            and parts.hostname
            and not _proxied(parts.hostname)
        ):
            self._keepalive = KeepAlive(
                parts.hostname,
                parts.port or 80,
                parts.path.rstrip("/"),
                {"Authorization": f"Bearer {token}"},
            )

    def close(self) -> None:
        self._http.close()
        if self._keepalive is not None:
            self._keepalive.close()

    @property
    def keepalive(self) -> KeepAlive | None:
        """The keep-alive connection to a plain ``http://`` server, else None: the relay's
        lock-step socket (:mod:`fedsilo.client.relay_socket`) connects where it does."""
        return self._keepalive

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
            raise _connection_error(self.url, exc) from exc
        except httpx.TimeoutException as exc:
            raise ServerUnavailable(f"fedsilo server at {self.url} timed out: {exc}") from exc
        if response.status_code in ok:
            return response
        raise error_from_response(response)

    def exchange(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response | KeepAliveResponse:
        """:meth:`request` for a participant's per-task calls: over the keep-alive
        connection on a plain ``http://`` server (see the module docstring), else httpx.

        The answer has ``status_code``, ``headers.get``, ``content``, ``text`` and
        ``json()`` either way; errors are raised as by :meth:`request`.
        """
        if self._keepalive is None:
            return self.request(
                method,
                path,
                content=content,
                params=params,
                timeout=timeout,
                ok=ok,
                headers=headers,
            )
        merged = dict(headers or {})
        if content is not None:
            merged["Content-Type"] = OCTET_STREAM
        target = API_PREFIX + path + (f"?{urlencode(params)}" if params else "")
        wait = timeout if timeout is not None else self._timeout
        try:
            response = self._keepalive.request(method, target, content, merged, wait)
        except TimeoutError as exc:
            raise ServerUnavailable(f"fedsilo server at {self.url} timed out: {exc}") from exc
        except OSError as exc:  # refused, reset, closed mid-answer
            raise ServerUnavailable(f"cannot reach fedsilo server at {self.url}: {exc}") from exc
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
            raise _connection_error(self.url, exc) from exc
        result: dict[str, Any] = response.json()
        return result


def _proxied(host: str) -> bool:
    """Whether httpx would send plain-http calls to ``host`` through an ``HTTP_PROXY`` from
    the environment (the keep-alive path then stays off: it talks to the server directly)."""
    proxy = urllib.request.getproxies().get("http")
    return bool(proxy) and not urllib.request.proxy_bypass(host)


def _is_https(url: str, transport: httpx.BaseTransport | None) -> bool:
    return transport is None and url.lower().startswith("https://")


def _connection_error(url: str, exc: httpx.HTTPError) -> ConfigError | ServerUnavailable:
    """A certificate that does not verify is the caller's trust setting to fix; anything
    else is a server that may come back."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:  # a chain may loop back on itself
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return ConfigError(
                f"The TLS certificate of {url} is not trusted ({cause.verify_message}). "
                f"Pass --ca-cert or set {CA_BUNDLE_ENV} to the CA bundle that signed it."
            )
        cause = cause.__cause__ or cause.__context__
    return ServerUnavailable(f"cannot reach fedsilo server at {url}: {exc}")


def error_from_response(response: httpx.Response | KeepAliveResponse) -> APIError:
    """The :class:`APIError` subclass for ``response``'s status, carrying its ``detail``."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text or response.reason_phrase
    cls = _ERRORS.get(response.status_code, APIError)
    return cls(response.status_code, detail)
