"""The web portal, served by the fedsilo server itself at ``/``.

Server-rendered pages (Jinja2 templates, inline SVG plots) and one small script of plain
``fetch`` (copy a new token, refresh a session's status and round, submit the demo's sign-in
link); every asset ships in the package. Sign-in takes a token; the browser then holds only a
signed session cookie (:mod:`.session`), which :class:`~.guard.PortalGuard` turns into the
request's bearer token, so the portal's routes (:mod:`.routes`) are authorized by the API's own
requirements and show what the API would show that token.
"""

from __future__ import annotations

from fastapi import FastAPI

from fedsilo.server.portal.guard import PortalGuard
from fedsilo.server.portal.routes import router
from fedsilo.server.portal.session import PortalSessions
from fedsilo.server.portal.web import error_page
from fedsilo.server.settings import Settings

__all__ = ["install"]


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the portal from ``app``: its routes, and the guard in front of them."""
    sessions = PortalSessions(settings.resolved_data_dir())
    app.state.portal_sessions = sessions
    app.include_router(router)
    app.add_middleware(PortalGuard, sessions=sessions, error_page=error_page)
