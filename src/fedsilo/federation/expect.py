"""What a reply must look like before it reaches the workflow.

A participant is not trusted to answer as its task asked: a buggy or hostile silo can leave an
array out, send another shape or dtype, send NaN, or claim ``num_examples = 1e9`` to dominate
a weighted mean. A task may carry a :class:`ReplySpec` (``Task(expect=...)``); every context
(the server's engine, the in-process runner) passes each reply through :func:`screen` before
the workflow sees it, so a reply that does not meet its task becomes one
:class:`~fedsilo.federation.Failure` with cause ``"malformed"`` -- counted under the
strategy's ``accept_failures`` / ``min_fit_clients`` like any failed task -- and never an
exception deep in an aggregator.

Counts are checked against what the participant declared on joining (its
:class:`~fedsilo.wire.DatasetSummary`): a silo that said 16,000 training rows may weigh at
most 16,000 in a round, so its say in a weighted mean is the one it announced before the
session started and every other participant could see.

A rejection's reason names the client, the field, what was expected and what came -- shapes,
dtypes, counts, never array values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from fedsilo.federation.task import Failure, Outcome, Reply, Task
from fedsilo.wire import DatasetSummary

__all__ = [
    "CHECKS",
    "ArraySpec",
    "Check",
    "Count",
    "Problem",
    "ReplySpec",
    "RowCount",
    "check_reply",
    "rejection_line",
    "screen",
]

#: the declared row count that bounds a reply's count: ``evaluation_rows`` is the larger of
#: ``train_rows`` and ``test_rows`` (a client without a test set evaluates on its training rows)
RowCount = Literal["train_rows", "test_rows", "evaluation_rows"]

#: which check a reply failed (a label for counting rejections, e.g. in server metrics)
Check = Literal["missing_array", "unexpected_array", "shape", "dtype", "non_finite", "count"]
CHECKS: tuple[Check, ...] = get_args(Check)

# Floats per step of the finiteness check: a bool temporary of 64 Ki entries stays in cache
# where one of the model's size would cost as much memory as the reply (25 MB for 25M floats).
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ArraySpec:
    """One array a reply must carry.

    Attributes
    ----------
    shape : tuple of int
    dtype : str
        A numpy dtype name (``"float32"``); compared exactly, byte order aside.
    """

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Count:
    """A count in the reply's meta that weighs the reply (``num_examples``, ...).

    Attributes
    ----------
    rows : {"train_rows", "test_rows", "evaluation_rows"}
        The declared row count it may not exceed.
    minimum : int, default 1
        The smallest value accepted; 0 for an evaluation that may have no rows (a client
        under differential privacy without a test set evaluates nothing).
    required : bool, default True
        Whether the key must be present; an optional count is checked when present.
    """

    rows: RowCount
    minimum: int = 1
    required: bool = True


@dataclass(frozen=True)
class ReplySpec:
    """What a task's reply must carry.

    Parameters
    ----------
    arrays : mapping of str to ArraySpec, optional
        Exactly these arrays, in these shapes and dtypes. None leaves names, shapes and
        dtypes unchecked.
    finite : bool, default True
        Every floating-point array must be free of NaN and infinity.
    counts : mapping of str to Count, optional
        Meta keys that must be integers (not bool, not float) within
        ``[minimum, declared rows]``.

    Examples
    --------
    A fit reply must send back the global model's arrays and weigh at most its training rows:

    >>> spec = ReplySpec.like(weights, counts={"num_examples": Count("train_rows")})
    >>> Task(to=p, kind="fit", arrays=weights, expect=spec)
    """

    arrays: Mapping[str, ArraySpec] | None = None
    finite: bool = True
    counts: Mapping[str, Count] = field(default_factory=dict)

    @classmethod
    def like(
        cls,
        arrays: Mapping[str, Any],
        *,
        finite: bool = True,
        counts: Mapping[str, Count] | None = None,
    ) -> ReplySpec:
        """The spec of a reply carrying the same names, shapes and dtypes as ``arrays``.

        Holds only shapes and dtype names, never the arrays.
        """
        specs = {}
        for name, value in arrays.items():
            array = np.asarray(value)
            specs[name] = ArraySpec(tuple(int(n) for n in array.shape), array.dtype.name)
        return cls(arrays=specs, finite=finite, counts=dict(counts or {}))


@dataclass(frozen=True)
class Problem:
    """How a reply fails its spec: the check, and one line saying field, expected and got."""

    check: Check
    message: str

    def __str__(self) -> str:
        return self.message


def check_reply(spec: ReplySpec, reply: Reply, declared: DatasetSummary | None) -> Problem | None:
    """The first way ``reply`` fails ``spec``; None when it meets it.

    Parameters
    ----------
    spec : ReplySpec
    reply : Reply
    declared : DatasetSummary or None
        What the participant declared on joining. None (an in-process participant given no
        summary) leaves counts unbounded above.

    Returns
    -------
    Problem or None
        E.g. ``Problem("shape", "array 'w' has shape (3,); expected (4,)")``. Names fields
        and shapes, never array values.
    """
    if spec.arrays is not None:
        problem = _check_arrays(spec.arrays, reply.arrays)
        if problem is not None:
            return problem
    if spec.finite:
        for name, array in reply.arrays.items():
            bad = _non_finite(array)
            if bad:
                return Problem(
                    "non_finite",
                    f"array {name!r} holds {bad} non-finite value(s) (NaN or infinity); "
                    "expected finite values",
                )
    for key, count in spec.counts.items():
        problem = _check_count(key, count, reply.meta, declared)
        if problem is not None:
            return problem
    return None


def screen(task: Task, outcome: Outcome, declared: DatasetSummary | None) -> Outcome:
    """``outcome``, or a ``"malformed"`` :class:`Failure` when it is a reply that does not
    meet ``task.expect``. Failures and tasks without an expectation pass unchanged.

    The one check both contexts apply (the engine on the workflow's thread, the in-process
    runner as it resolves the task), so a package's workflow sees the same outcomes in both.
    """
    if task.expect is None or not isinstance(outcome, Reply):
        return outcome
    problem = check_reply(task.expect, outcome, declared)
    if problem is None:
        return outcome
    where = f" (round {task.round})" if task.round else ""
    return Failure(
        task.to,
        task.kind,
        task.round,
        "malformed",
        f"{task.kind} reply{where} rejected: {problem.message}",
        check=problem.check,
    )


def rejection_line(failure: Failure) -> str:
    """The session-log line of a reply :func:`screen` rejected."""
    return f"client {failure.participant.client_name!r}: {failure.reason}"


# ----------------------------------------------------------------------------- checks


def _check_arrays(
    expected: Mapping[str, ArraySpec], got: Mapping[str, np.ndarray]
) -> Problem | None:
    missing = sorted(set(expected) - set(got))
    if missing:
        return Problem(
            "missing_array", f"arrays {missing} are missing; expected {sorted(expected)}"
        )
    unexpected = sorted(set(got) - set(expected))
    if unexpected:
        return Problem(
            "unexpected_array",
            f"arrays {unexpected} are unexpected; expected only {sorted(expected)}",
        )
    for name, spec in expected.items():
        array = got[name]
        if tuple(array.shape) != spec.shape:
            return Problem(
                "shape", f"array {name!r} has shape {tuple(array.shape)}; expected {spec.shape}"
            )
        if array.dtype.name != spec.dtype:
            return Problem(
                "dtype", f"array {name!r} has dtype {array.dtype.name}; expected {spec.dtype}"
            )
    return None


def _non_finite(array: np.ndarray) -> int:
    """How many entries of a floating-point array are NaN or infinite (0 for other dtypes).

    One pass in cache-sized chunks; the count is taken only once a chunk failed, so an
    honest reply costs one ``isfinite`` per element and no full-size temporary.
    """
    if array.dtype.kind not in "fc":
        return 0
    flat = array.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        if not np.isfinite(flat[start : start + _CHUNK]).all():
            return int(flat.size - np.count_nonzero(np.isfinite(flat)))
    return 0


def _bound(count: Count, declared: DatasetSummary | None) -> int | None:
    if declared is None:
        return None
    if count.rows == "evaluation_rows":
        return max(declared.train_rows, declared.test_rows)
    return int(getattr(declared, count.rows))


def _check_count(
    key: str, count: Count, meta: Mapping[str, Any], declared: DatasetSummary | None
) -> Problem | None:
    upper = _bound(count, declared)
    expected = (
        f"an integer in [{count.minimum}, {upper}] (the {count.rows} declared on joining)"
        if upper is not None
        else f"an integer >= {count.minimum}"
    )
    if key not in meta:
        if not count.required:
            return None
        return Problem("count", f"meta[{key!r}] is missing; expected {expected}")
    value = meta[key]
    # bool is an int to Python and 1e9 a number to JSON: neither is a count of rows.
    if isinstance(value, bool) or not isinstance(value, int):
        return Problem("count", f"meta[{key!r}] is {_describe(value)}; expected {expected}")
    if value < count.minimum or (upper is not None and value > upper):
        return Problem("count", f"meta[{key!r}] is {value}; expected {expected}")
    return None


def _describe(value: Any) -> str:
    """A meta value for an error line: numbers as such, anything else by type only (a
    client's meta could carry anything, and the log is no place for it)."""
    if isinstance(value, bool):
        return f"{value} (a bool)"
    if isinstance(value, float):
        return f"{value:g} (a float)" if math.isfinite(value) else f"{value} (a float)"
    return f"a {type(value).__name__}"
