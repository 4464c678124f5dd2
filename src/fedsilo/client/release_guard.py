"""The data owner's policy on each release: two client mods and the history of released rows.

:class:`PolicyGuard` is made by :meth:`fedsilo.client.policy.DataOwnerPolicy.guard` once the
session's data is loaded; the client's chain (:func:`fedsilo.client.mods.client_mods`) puts
its :meth:`~PolicyGuard.gate` outside the secure-aggregation mod and its
:meth:`~PolicyGuard.check_release` inside it. :class:`ReleasedRows` keeps, on the client's
disk, the row counts released from each table across sessions, for seed 004's rule on
incremental deltas (see :mod:`fedsilo.client.policy`).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.client.mods import Handler, TaskReply, TaskRequest
from fedsilo.errors import ConfigError
from fedsilo.wire import REFUSAL_REASON_MAX

if TYPE_CHECKING:
    from fedsilo.client.policy import DataOwnerPolicy

__all__ = ["PolicyGuard", "PolicyRefusal", "ReleasedRows"]

_TRAIN_COUNTS = ("num_rows", "num_examples")
_TEST_COUNT = "test_num_examples"


class PolicyRefusal(ConfigError):
    """The data owner's policy refuses the session (or one of its releases).

    Attributes
    ----------
    rule : str
        The policy key that refused (``min_rows``, ``max_epsilon``, ...).
    why : str
        What breaks it, without data.
    reason : str
        One line naming the rule and why: what the server is told of a refused session.
    """

    def __init__(self, rule: str, why: str) -> None:
        self.rule = rule
        self.why = why
        self.reason = self.refusing("the session")
        super().__init__(self.reason)

    def refusing(self, what: str) -> str:
        """The one line: ``the data owner's policy refuses <what>: rule '<rule>': <why>``."""
        return _one_line(f"the data owner's policy refuses {what}: rule '{self.rule}': {self.why}")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REFUSAL_REASON_MAX else text[: REFUSAL_REASON_MAX - 3] + "..."


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created 0600) for the block."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class ReleasedRows:
    """The row counts this client released from each table, across sessions (on its disk).

    One JSON object ``{table path: [counts]}`` at ``<state_dir>/policy/released_rows.json``,
    rewritten (to a temporary file, then renamed) only when a new count is recorded, so a
    session whose releases all cover the same rows writes it once.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "policy" / "released_rows.json"
        self._lock = threading.Lock()

    def counts(self, source: str) -> list[int]:
        return self._read().get(source, [])

    def record(self, source: str, rows: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Read, add, rewrite under an exclusive lock on a file beside it: several
        # participants (threads of one client, or client processes sharing the state dir)
        # record into the same history, and an unlocked read-modify-write loses entries.
        with self._lock, _exclusive(self.path.with_suffix(".lock")):
            released = self._read()
            counts = released.setdefault(source, [])
            if rows in counts:
                return
            counts.append(rows)
            counts.sort()
            partial = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
            partial.write_text(json.dumps(released, sort_keys=True), encoding="utf-8")
            partial.replace(self.path)

    def _read(self) -> dict[str, list[int]]:
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Refusing is safe; forgetting the history is not (it holds the delta rule).
            # Said without the path: the refusal goes to the server.
            raise PolicyRefusal(
                "min_rows",
                f"the history of released row counts (policy/released_rows.json in the "
                f"client's state directory) cannot be read ({type(exc).__name__}); restore "
                "or remove it",
            ) from None
        return {str(k): [int(c) for c in v] for k, v in dict(loaded).items()}


@dataclass
class PolicyGuard:
    """The policy's per-release checks for one participant: two mods for the client chain.

    :meth:`gate` sits outside the secure-aggregation mod (it sees the task as the server
    sent it); :meth:`check_release` sits inside it, right over the executor, and reads only
    the counts and the epsilon of the executor's reply before anything is masked or sent.
    """

    policy: DataOwnerPolicy
    min_rows: int
    source: str | None
    history: ReleasedRows
    emit: Callable[[str], None] | None = None
    #: the training table's rows (a reply reporting no count was computed over them all)
    table_rows: int | None = None

    def gate(self, task: TaskRequest, call_next: Handler) -> TaskReply:
        """Refuse a plain ``fit`` when the policy requires secure aggregation."""
        # The key is the secure-aggregation workflow's (fedsilo.workflows.secure.SECAGG_META).
        if (
            self.policy.require_secure_aggregation
            and task.kind == "fit"
            and not isinstance(task.meta.get("secagg"), Mapping)
        ):
            return self._refused(
                task,
                PolicyRefusal(
                    "require_secure_aggregation",
                    "the server asked for a fit update without secure aggregation",
                ),
            )
        return call_next(task)

    def check_release(self, task: TaskRequest, call_next: Handler) -> TaskReply:
        """The executor's reply, or a failed one naming the rule it breaks."""
        reply = call_next(task)
        if not reply.ok or reply.replayed:
            return reply
        try:
            train: list[int | None] = [
                _count(reply.meta, key) for key in _TRAIN_COUNTS if key in reply.meta
            ]
            test = _count(reply.meta, _TEST_COUNT) if _TEST_COUNT in reply.meta else None
            if not train and test is None:
                train = [self.table_rows]  # computed over the whole table
            for rows in train:
                self.check_rows(rows, "train", delta=True, release=True)
            if test:
                self.check_rows(test, "test", delta=False, release=True)
            for column, values in _column_counts(reply.meta):
                if 0 < values < self.min_rows:
                    raise PolicyRefusal(
                        "min_rows",
                        f"a release of column {column!r} over {values} value(s); at least "
                        f"{self.min_rows} are required",
                    )
            spent = reply.meta.get("epsilon_spent")
            limit = self.policy.max_epsilon
            if isinstance(spent, int | float) and limit is not None and spent > limit:
                raise PolicyRefusal(
                    "max_epsilon", f"the reply has spent epsilon {spent:g}, above {limit:g}"
                )
        except PolicyRefusal as refusal:
            return self._refused(task, refusal)
        for rows in train:
            if rows is not None and self.source is not None:
                self.history.record(self.source, rows)
        return reply

    def check_rows(self, rows: int | None, role: str, *, delta: bool, release: bool) -> None:
        """Hold ``rows`` of the table ``role`` to ``min_rows`` and (``delta``) the delta rule.

        ``release`` says whether the rows are a reply's (else the table's, before joining);
        ``rows=None`` (no training table) holds nothing.
        """
        if rows is None:
            return
        what = (
            f"a release over {rows} row(s) of the {role} table"
            if release
            else (f"the {role} table has {rows} row(s)")
        )
        if rows < self.min_rows:
            raise PolicyRefusal("min_rows", f"{what}; at least {self.min_rows} are required")
        if not delta or self.source is None:
            return
        close = [c for c in self.history.counts(self.source) if 0 < abs(c - rows) < self.min_rows]
        if close:
            raise PolicyRefusal(
                "min_rows",
                f"{what}, {abs(close[0] - rows)} from the {close[0]} an earlier release "
                f"of it covered, fewer than {self.min_rows}: the difference of the two "
                "would reveal those rows",
            )

    def _refused(self, task: TaskRequest, refusal: PolicyRefusal) -> TaskReply:
        message = f"{task.label}: {refusal.refusing('the release')}"
        if self.emit is not None:
            self.emit(f"refused to release {message}")
        return TaskReply.failed(message)


def _column_counts(meta: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The values each column's statistics cover, in an exact eda release.

    eda sends ``columns[j]["moments"]["count"]`` -- the column's non-null values, fewer than
    the table's rows when it has nulls. A release under DP (a non-empty ``releases`` ledger)
    is noised, and its noisy counts are not held to the floor.
    """
    columns = meta.get("columns")
    if not isinstance(columns, list) or meta.get("releases"):
        return []
    counts = []
    for entry in columns:
        moments = entry.get("moments") if isinstance(entry, Mapping) else None
        count = moments.get("count") if isinstance(moments, Mapping) else None
        if isinstance(count, int | float) and not isinstance(count, bool) and math.isfinite(count):
            counts.append((str(entry.get("name")), int(count)))
    return counts


def _count(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        # A count the policy cannot read is refused, not ignored.
        raise PolicyRefusal("min_rows", f"the reply's {key} is not a row count ({value!r})")
    return int(value)
