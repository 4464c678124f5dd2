"""The portal's ASGI middleware: the session cookie becomes the request's bearer token.

For a portal path (anything outside ``/api/v1``, ``/healthz``, ``/metrics`` and FastAPI's
docs) carrying a valid portal cookie and no ``Authorization`` header, the guard adds
``Authorization: Bearer <the session's token>`` to the request. The portal's routes then
declare the very requirements the API's routes declare (``AdminToken``, ``SessionRead`` ...
from :mod:`fedsilo.server.api.deps`) and call the API's own route functions: one set of
authorization rules, checked by the same code. A request that brings its own
``Authorization`` header is served as such (no cookie is read, and no CSRF token is needed:
a browser never attaches that header by itself). The API paths never read the cookie.

For a browser (``Accept: text/html``) the guard also redirects a signed-out request to
``/signin``, renders an error answer of a portal route as an HTML page (same status), ends
the portal session whose token is no longer valid (401), and sets the portal's security
headers (a CSP allowing only the server's own scripts and styles, no framing, no referrer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedsilo.server.portal.session import COOKIE, PortalSession, PortalSessions, cookie_header
from fedsilo.wire import API_PREFIX

__all__ = ["PORTAL_SESSION", "PortalGuard", "is_portal_path"]

#: the scope key under which a cookie-authenticated request carries its portal session
PORTAL_SESSION = "fedsilo.portal_session"
#: paths that are not the portal's
_NOT_PORTAL = (API_PREFIX + "/", "/healthz", "/metrics", "/docs", "/redoc", "/openapi.json")
#: portal paths a signed-out browser may open
_OPEN = ("/signin", "/static/")
#: a portal form is a few fields; anything larger is refused before it is read
MAX_FORM_BYTES = 64 * 1024

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

#: renders an error page: (status, detail, signed_in) -> HTML
ErrorPage = Callable[[int, str, bool], str]


def is_portal_path(path: str) -> bool:
    return not path.startswith(_NOT_PORTAL) and path != API_PREFIX


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no session, not an error
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


class PortalGuard:
    """ASGI middleware in front of the portal's routes (see the module docstring)."""

    def __init__(self, app: ASGIApp, sessions: PortalSessions, error_page: ErrorPage) -> None:
        self.app = app
        self.sessions = sessions
        self.error_page = error_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_portal_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        browser = "text/html" in (_header(scope, b"accept") or "")
        session: PortalSession | None = None
        if _header(scope, b"authorization") is None:
            session = self.sessions.resolve(_cookie(scope, COOKIE))
            if session is not None:
                bearer = f"Bearer {session.secret}".encode()
                scope = {**scope, "headers": [*scope["headers"], (b"authorization", bearer)]}
                scope[PORTAL_SESSION] = session
            elif browser and not scope["path"].startswith(_OPEN):
                await _redirect(scope, send, "/signin?next=" + quote(scope["path"], safe="/"))
                return
        declared = _header(scope, b"content-length") or ""
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            await self._error(
                scope,
                send,
                413,
                f"A portal form is at most {MAX_FORM_BYTES} bytes; got Content-Length {declared}.",
                browser,
                session,
            )
            return
        await self.app(scope, receive, self._sender(scope, send, browser, session))

    def _sender(
        self, scope: Scope, send: Send, browser: bool, session: PortalSession | None
    ) -> Send:
        """``send`` adding the security headers, and turning a JSON error into a page."""
        held: list[Message] = []

        async def sender(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                is_json = any(k == b"content-type" and b"json" in v for k, v in headers)
                if browser and status >= 400 and is_json:
                    held.append(message)
                    return
                message = {**message, "headers": [*headers, *_SECURITY_HEADERS]}
                await send(message)
                return
            if held and message["type"] == "http.response.body":
                held.append(message)
                if message.get("more_body", False):
                    return
                status = int(held[0]["status"])
                body = b"".join(m.get("body", b"") for m in held[1:])
                try:
                    detail = str(json.loads(body).get("detail", ""))
                except (ValueError, AttributeError):
                    detail = body.decode(errors="replace")
                await self._error(scope, send, status, detail, True, session)
                return
            await send(message)

        return sender

    async def _error(
        self,
        scope: Scope,
        send: Send,
        status: int,
        detail: str,
        browser: bool,
        session: PortalSession | None,
    ) -> None:
        headers = list(_SECURITY_HEADERS)
        signed_in = session is not None
        if status == 401 and session is not None:
            # The token behind the session is no longer valid: so is the session.
            self.sessions.end(session.id)
            secure = scope.get("scheme") == "https"
            clear = cookie_header(COOKIE, "", secure=secure, max_age=0)
            headers.append((b"set-cookie", clear.encode()))
            signed_in = False
        if browser:
            body = self.error_page(status, detail, signed_in).encode()
            headers.append((b"content-type", b"text/html; charset=utf-8"))
        else:
            body = json.dumps({"detail": detail}).encode()
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _redirect(scope: Scope, send: Send, location: str) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0"), *_SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
