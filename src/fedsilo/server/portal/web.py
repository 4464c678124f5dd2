"""What every portal page shares: templates, the form dependency (with its CSRF check), and
whether a requirement of the API admits the signed-in principal (to show a link or a button;
the call itself is always checked by the route's own requirement)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from fedsilo import __version__
from fedsilo.server.access import Principal, Requirement
from fedsilo.server.api import deps
from fedsilo.server.portal.guard import PORTAL_SESSION
from fedsilo.server.portal.session import PortalSession
from fedsilo.server.state import SessionRecord

__all__ = [
    "Form",
    "PortalForm",
    "admits",
    "local_path",
    "nav_links",
    "render",
    "see_other",
    "validation_detail",
]

PACKAGE_DIR = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(PACKAGE_DIR / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


TEMPLATES.filters["when"] = _when
TEMPLATES.filters["number"] = _number


def requirement(alias: Any) -> Requirement:
    """The :class:`Requirement` an access alias of :mod:`~fedsilo.server.api.deps` declares."""
    dependency = get_args(alias)[1].dependency
    assert isinstance(dependency, Requirement), alias
    return dependency


def admits(alias: Any, principal: Principal, session: SessionRecord | None = None) -> bool:
    """Whether ``alias``'s requirement would admit ``principal`` (on ``session``, for a
    session requirement; without one, whether it admits some session)."""
    required = requirement(alias)
    if required.kind in ("public", "authenticated"):
        return True
    if any(principal.has(scope) for scope in required.scopes):
        return True
    if required.own_scope is None or not principal.has(required.own_scope):
        return False
    return session is None or session.owner_id == principal.user_id


def nav_links(principal: Principal | None) -> list[tuple[str, str]]:
    """The pages ``principal`` may open: (path, label)."""
    if principal is None:
        return []
    links = [("/", "Dashboard")]
    if admits(deps.SessionLister, principal):
        links.append(("/sessions", "Sessions"))
    if admits(deps.AdminToken, principal):
        links += [("/tokens", "Tokens"), ("/users", "Users"), ("/audit", "Audit log")]
    return links


def portal_session(request: Request) -> PortalSession | None:
    session = request.scope.get(PORTAL_SESSION)
    return session if isinstance(session, PortalSession) else None


def render(
    request: Request,
    template: str,
    principal: Principal | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    session = portal_session(request)
    page = TEMPLATES.get_template(template).render(
        principal=principal,
        nav=nav_links(principal),
        path=request.url.path,
        csrf=session.csrf if session is not None else "",
        version=__version__,
        **context,
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def error_page(status: int, detail: str, signed_in: bool) -> str:
    """The HTML of an error answer (the guard renders API errors of portal routes with it)."""
    return TEMPLATES.get_template("error.html").render(
        status=status,
        detail=detail,
        signed_in=signed_in,
        principal=None,
        nav=[("/", "Dashboard")] if signed_in else [],
        path="",
        csrf="",
        version=__version__,
    )


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def local_path(value: str | None, default: str) -> str:
    """``value`` when it is a path on this server (``/...``, never ``//host``), else
    ``default``: a form's return address cannot send the browser elsewhere."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return default


def validation_detail(exc: ValidationError) -> str:
    """``field: message`` per problem (a form's fields are the API body's)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )


class Form:
    """A submitted ``application/x-www-form-urlencoded`` form."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0].strip() if values else default

    def getlist(self, name: str) -> list[str]:
        return [v for v in self.fields.get(name, []) if v]


async def read_form(request: Request) -> Form:
    body = await request.body()
    return Form(parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True))


CSRF_REFUSED = (
    "The form's CSRF token is missing or stale; reload the page and submit the form again."
)


async def portal_form(request: Request) -> Form:
    """The form of a portal POST; a cookie-authenticated one must carry the session's CSRF
    token (403 otherwise). Declared after the route's requirement, so it runs after it."""
    form = await read_form(request)
    session = portal_session(request)
    if session is not None and not session.csrf_ok(form.get("csrf") or None):
        raise HTTPException(status_code=403, detail=CSRF_REFUSED)
    return form


PortalForm = Annotated[Form, Depends(portal_form)]
