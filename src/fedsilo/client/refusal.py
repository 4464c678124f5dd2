"""What a client tells the server when it refuses a session before joining.

A client refuses when its data cannot serve the session (a required column missing, a
non-numeric column, too few rows ...) or the session's configuration cannot run here (an
unknown package, a config this client rejects). It stops with the full error locally; the
server gets one line, so the session's log and status reason say that client X refused and
why, instead of the session waiting without a word.

The line is built from the error's problems with what the server has no business knowing
removed: local paths become the option that named them (``--train-path``), and a table
parser's own message (which may quote the file's contents) is dropped. What stays names
columns, dtypes, counts and rules, never values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fedsilo.errors import ConfigError, DataError
from fedsilo.wire import REFUSAL_REASON_MAX

__all__ = ["refusal_reason"]

# A parser's message after "could not be read as csv:" may quote lines of the file; it runs
# to the end of its problem (each problem is scrubbed on its own).
_PARSER_DETAIL = re.compile(r"(could not be read as \w+): .*", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ELLIPSIS = "..."


def refusal_reason(error: DataError | ConfigError, tables: Mapping[str, str | None]) -> str:
    """One printable line saying why this client refuses, safe to send to the server.

    Parameters
    ----------
    error : DataError or ConfigError
        Why the client cannot join (from loading, validation or the executor's checks).
    tables : mapping of role to local path
        The tables given; their paths are removed from the reason.

    Returns
    -------
    str
        At most :data:`~fedsilo.wire.REFUSAL_REASON_MAX` characters, no control characters.
    """
    if isinstance(error, DataError):
        problems = error.problems or [str(error)]
        head = f"its data cannot be used ({len(problems)} problem(s)): "
    else:
        problems = [str(error)]
        head = "the session's configuration cannot run here: "
    text = head + "; ".join(_scrub(problem, tables) for problem in problems)
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > REFUSAL_REASON_MAX:
        text = text[: REFUSAL_REASON_MAX - len(_ELLIPSIS)].rstrip() + _ELLIPSIS
    return text


def _scrub(problem: str, tables: Mapping[str, str | None]) -> str:
    # Longest first, so a path that contains another is removed whole.
    for path in sorted((p for p in tables.values() if p), key=len, reverse=True):
        problem = problem.replace(f" {path!r}", "").replace(repr(path), "'<local path>'")
    return _PARSER_DETAIL.sub(r"\1 (details in the client's log)", problem)
