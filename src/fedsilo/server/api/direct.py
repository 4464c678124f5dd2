"""The hot routes' request handler: their own dependencies called directly.

The participant routes a round runs on (``tasks/next``, a reply with the next task, the
heartbeat) and the relay's (a SplitNN batch is two relay requests) are called by every
client every round, and FastAPI's generic handler -- dependency solving with its
per-request cache keys, parameter validation through pydantic, the exit stacks -- was a
fifth of the server's CPU per request. :class:`DirectRoute` builds, once, a plan of what a
route's dependant asks for, and when every part is of a kind it knows (path parameters,
the request, float query parameters whose only bound is ``ge=0`` with a float default or
``None``, and async dependencies that take only path parameters and the request), answers
a plain request by calling the *same* dependencies in the same order with the same
arguments -- the route's declared :class:`~fedsilo.server.access.Requirement` first, then
the participant-credential check -- and then the endpoint. Anything else (a query value
that is not a plain decimal, a dependant of another shape, a body parameter) goes through
FastAPI's own handler, so validation errors and their 422 bodies stay FastAPI's.

``tests/unit/server/test_direct_route.py`` checks that the routes as mounted in the app
have the dependencies this plan calls (an app-level dependency added at ``include_router``
would otherwise be skipped) and that both handlers answer alike.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge
from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic.fields import FieldInfo

__all__ = ["DirectRoute", "direct_plan"]

#: a query value the direct path takes as it is: a non-negative decimal (FastAPI's handler
#: validates anything else, and answers 422 as it always did)
_PLAIN_NUMBER = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9})?$")


@dataclass(frozen=True)
class _Call:
    name: str
    call: Callable[..., Awaitable[Any]]
    path: tuple[str, ...]
    request: str | None


@dataclass(frozen=True)
class DirectPlan:
    """What a route's endpoint takes, in the order FastAPI resolves it."""

    dependencies: tuple[_Call, ...]
    path: tuple[str, ...]
    query: tuple[tuple[str, float | None], ...]  # (name, default)
    request: str | None

    async def run(
        self, endpoint: Callable[..., Coroutine[Any, Any, Response]], request: Request
    ) -> Response | None:
        """The endpoint's answer, or None when the request is not a plain one."""
        params = request.query_params
        known = {name for name, _ in self.query}
        if any(key not in known for key in params):
            return None
        kwargs: dict[str, Any] = {}
        for name, default in self.query:
            raw = params.get(name)
            if raw is None:
                kwargs[name] = default
            elif _PLAIN_NUMBER.match(raw):
                kwargs[name] = float(raw)
            else:
                return None
        path = request.path_params
        for dependency in self.dependencies:
            arguments = {name: path[name] for name in dependency.path}
            if dependency.request is not None:
                arguments[dependency.request] = request
            kwargs[dependency.name] = await dependency.call(**arguments)
        for name in self.path:
            kwargs[name] = path[name]
        if self.request is not None:
            kwargs[self.request] = request
        return await endpoint(**kwargs)


def _is_async(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 (a Requirement instance)
    )


def _plain(dependant: Dependant) -> bool:
    """Whether ``dependant`` takes nothing but path parameters, query parameters and the
    request (no headers, cookies, body, security scopes, background tasks or response)."""
    return not (
        dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    )


def _plain_number(info: FieldInfo) -> bool:
    """Whether a query parameter's only constraints are ``ge=0`` and finiteness: what
    :data:`_PLAIN_NUMBER` values meet. Any other bound (``le``, ``gt``) is FastAPI's to
    check."""
    for item in info.metadata:
        if isinstance(item, Ge) and item.ge == 0:
            continue
        if getattr(item, "allow_inf_nan", None) is False:
            continue
        return False
    return True


def direct_plan(dependant: Dependant) -> DirectPlan | None:
    """The plan of ``dependant``, or None when some part of it is of another kind."""
    if not (_plain(dependant) and _is_async(dependant.call)):
        return None
    calls = []
    for sub in dependant.dependencies:
        if (
            sub.dependencies
            or sub.query_params
            or not _plain(sub)
            or sub.name is None
            or sub.call is None
            or not _is_async(sub.call)
        ):
            return None
        calls.append(
            _Call(
                sub.name, sub.call, tuple(p.name for p in sub.path_params), sub.request_param_name
            )
        )
    query: list[tuple[str, float | None]] = []
    for field in dependant.query_params:
        default = field.field_info.default
        if field.alias != field.name or not _plain_number(field.field_info):
            return None
        if field.field_info.annotation is float and isinstance(default, float):
            query.append((field.name, default))
        elif field.field_info.annotation == float | None and default is None:
            query.append((field.name, None))
        else:
            return None
    return DirectPlan(
        tuple(calls),
        tuple(p.name for p in dependant.path_params),
        tuple(query),
        dependant.request_param_name,
    )


class DirectRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` whose plain requests skip FastAPI's dependency
    solving (see the module docstring); its dependant, OpenAPI entry and errors are
    FastAPI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        general = super().get_route_handler()
        plan = direct_plan(self.dependant)
        endpoint = self.dependant.call
        if plan is None or endpoint is None:
            return general

        async def handler(request: Request) -> Response:
            answer = await plan.run(endpoint, request)
            if answer is None:
                return await general(request)
            return answer

        return handler
