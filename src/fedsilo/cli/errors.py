"""How the CLI reports errors: one clear line on stderr and an exit code, never a traceback.

Exit codes (stable; scripts may branch on them)::

    0  success
    1  any other fedsilo error, an OS error, or an unexpected error
    2  DataError, ConfigError (and click's usage errors)
    3  AuthenticationError      token missing, invalid, revoked or expired
    4  NotFoundError            no such session / token / ...
    5  ConflictError            the resource's state forbids it (e.g. joining an ended session)
    6  SessionError             the session failed or was canceled
    7  ServerUnavailable        the server could not be reached
    130  interrupted (Ctrl-C)

A :class:`~fedsilo.errors.DataError` with several problems prints a header line and one
indented line per problem, so a data owner sees everything to fix at once.

Set ``FEDSILO_DEBUG=1`` to let unexpected exceptions through with their traceback.
"""

from __future__ import annotations

import os
from typing import Any

import typer
from typer.core import TyperGroup

from fedsilo.errors import (
    APIError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    DataError,
    FedsiloError,
    NotFoundError,
    ServerUnavailable,
    SessionError,
    ValidationError,
)

__all__ = ["EXIT_CODES", "FedsiloGroup", "exit_code_for", "format_error", "report_error"]

#: Most specific class first; the first ``isinstance`` match decides the exit code.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (DataError, 2),
    (ConfigError, 2),
    (AuthenticationError, 3),
    (NotFoundError, 4),
    (ConflictError, 5),
    (SessionError, 6),
    (ServerUnavailable, 7),
    (FedsiloError, 1),
)
EXIT_INTERRUPTED = 130


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for ``exc`` (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _api_detail(detail: Any) -> str:
    # FastAPI's 422 detail is a list of {"loc": [...], "msg": ...}; show it as "field: message".
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def format_error(exc: BaseException) -> list[str]:
    """The lines to print for ``exc``: one, or a header plus one line per data problem."""
    if isinstance(exc, DataError):
        if len(exc.problems) == 1:
            return [f"Error: {_one_line(exc.problems[0])}"]
        lines = [f"Error: {exc.source} cannot be used ({len(exc.problems)} problems):"]
        lines += [f"  - {_one_line(problem)}" for problem in exc.problems]
        return lines
    if isinstance(exc, (AuthenticationError, NotFoundError, ConflictError, ValidationError)):
        # The class already says what kind of answer it was; the server's detail says why.
        return [f"Error: {_one_line(_api_detail(exc.detail))}"]
    if isinstance(exc, APIError):
        return [f"Error: server answered {exc.status_code}: {_one_line(_api_detail(exc.detail))}"]
    if isinstance(exc, FedsiloError):
        return [f"Error: {_one_line(str(exc))}"]
    if isinstance(exc, KeyboardInterrupt):
        return ["Interrupted."]
    if isinstance(exc, OSError):
        return [f"Error: {_one_line(str(exc))}"]
    message = _one_line(str(exc)) or "(no message)"
    return [
        f"Error: unexpected {type(exc).__name__}: {message} "
        "(this is a bug in fedsilo; set FEDSILO_DEBUG=1 to see the traceback)"
    ]


def report_error(exc: BaseException) -> int:
    """Print ``exc`` to stderr as :func:`format_error` does and return its exit code."""
    for line in format_error(exc):
        typer.echo(line, err=True)
    return exit_code_for(exc)


class FedsiloGroup(TyperGroup):
    """The root command group: turns every error a command raises into a line and a code.

    Sub-groups run inside the root group's :meth:`invoke`, so installing this class on the
    root app covers every command.
    """

    # `ctx` is typer's (vendored click) Context; typed Any to match the base signature
    # without importing typer's private `_click` package.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own control flow and usage errors keep their behaviour
        except BrokenPipeError:
            # stdout went away (`fedsilo ... | head`); there is no one left to tell.
            raise typer.Exit(1) from None
        except (FedsiloError, OSError, KeyboardInterrupt) as exc:
            raise typer.Exit(report_error(exc)) from None
        except Exception as exc:
            if os.environ.get("FEDSILO_DEBUG"):
                raise
            raise typer.Exit(report_error(exc)) from None
