"""The data owner's policy: rules a client holds every session to before it releases anything.

The session's configuration is written by whoever created the session; the policy is written
by the silo's operator, and the client enforces it whatever the session says. It is a TOML
file (``fedsilo client train --policy silo.toml``, or ``$FEDSILO_CLIENT_POLICY``)::

    min_rows = 20                           # default: the session's attributes + 5
    max_epsilon = 4.0                       # default: no limit
    require_dp = false                      # refuse sessions without differential privacy
    require_secure_aggregation = true       # refuse sessions without secure_aggregation
    allowed_packages = ["glm", "eda"]       # default: every package
    approved_package_digests = ["mypkg@<64 hex>"]   # custom packages (see below)

TOML rather than YAML: ``tomllib`` is in the standard library (no dependency for the client),
and TOML's types are explicit -- ``min_rows = "20"`` is a string and refused, ``no`` is no
boolean.

Where each rule is enforced
---------------------------
Before joining (:meth:`DataOwnerPolicy.check_session`, on the session as fetched, before the
package's code is loaded): ``allowed_packages``, ``approved_package_digests``,
``require_secure_aggregation``. After the data is loaded, still before joining
(:meth:`DataOwnerPolicy.guard`): ``max_epsilon`` and ``require_dp`` on the package's parsed
privacy budget, ``min_rows`` on every table's row count and the delta rule on the training
table. Then on every release, in the client's mods (:class:`PolicyGuard`): ``min_rows`` and
the delta rule on the rows the reply says it was computed over, ``max_epsilon`` on the
epsilon it reports spent, and ``require_secure_aggregation`` on every ``fit`` task (a server
that announced secure aggregation and then asks for a plain update is refused).

``min_rows`` -- seed 004's rule
-------------------------------
A release of exact statistics over too few rows can be inverted into the rows; the seed
requires at least *attributes + 5* rows (the attributes are the columns the session reads
from this silo), and the same for each incremental delta: rows released over ``n`` rows and
later over ``m`` rows of the same table give the statistics of ``|n - m|`` rows by
difference. The client therefore remembers, in its state directory
(``policy/released_rows.json``), the row counts it released from each table (by its path)
across sessions, and refuses a release whose count differs from an earlier one by less than
``min_rows`` (an equal count is the same rows again). A reply's rows are the counts it
reports -- ``num_rows`` and ``num_examples`` for the training table, ``test_num_examples``
for the test table -- and a reply that reports none was computed over the whole table.
The rule holds for every release, noised or not: it is the owner's floor.

Refusals
--------
A refusal names its rule and why, in one line without data: before joining it is a
:class:`PolicyRefusal` (the runtime tells the server, ``POST /sessions/{sid}/refusals``,
and stops); during the session the task's reply fails with it as its error.

``approved_package_digests`` is parsed and enforced against a session's
``package_digest`` when the session carries one; built-in packages carry none, and
uploading custom packages is a later issue, so for now the key is reserved.
"""

from __future__ import annotations

import json
import math
import os
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from fedsilo.client.mods import Handler, TaskReply, TaskRequest
from fedsilo.config.secure import secure_spec
from fedsilo.errors import ConfigError
from fedsilo.wire import REFUSAL_REASON_MAX, SessionPublic

__all__ = [
    "POLICY_ENV",
    "DataOwnerPolicy",
    "PolicyGuard",
    "PolicyRefusal",
    "load_policy",
    "planned_epsilon",
]

#: the environment variable naming the policy file when ``--policy`` is not given
POLICY_ENV = "FEDSILO_CLIENT_POLICY"
#: the default ``min_rows`` is the number of attributes plus this (seed 004)
MIN_ROWS_MARGIN = 5
_TRAIN_COUNTS = ("num_rows", "num_examples")
_TEST_COUNT = "test_num_examples"

PackageDigest = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}@[0-9a-f]{64}$", strict=True)
]


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


class DataOwnerPolicy(BaseModel):
    """The policy file's keys (see the module docstring).

    Parameters
    ----------
    min_rows : int >= 1, optional
        Default: the number of columns the session reads from this silo plus 5.
    max_epsilon : float > 0, optional
        The most epsilon a session may plan to spend on this silo. Default: no limit.
    require_dp : bool, default False
        Refuse sessions that do not plan a differential privacy budget.
    require_secure_aggregation : bool, default False
        Refuse sessions whose model_config has no enabled ``secure_aggregation``.
    allowed_packages : list of str, optional
        The packages a session may use. Default: every package.
    approved_package_digests : list of str, default []
        ``NAME@SHA256`` (64 lowercase hex) of the custom packages this silo runs.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    min_rows: int | None = Field(default=None, ge=1)
    max_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    require_dp: bool = False
    require_secure_aggregation: bool = False
    allowed_packages: list[Annotated[str, StringConstraints(min_length=1)]] | None = None
    approved_package_digests: list[PackageDigest] = Field(default_factory=list)

    def check_session(self, session: SessionPublic) -> None:
        """The rules that need only the session as the server describes it.

        Raises
        ------
        PolicyRefusal
        """
        package = session.package_name
        if self.allowed_packages is not None and package not in self.allowed_packages:
            raise PolicyRefusal(
                "allowed_packages",
                f"package {package!r} is not among the allowed {self.allowed_packages}",
            )
        digest = getattr(session, "package_digest", None)
        if digest is not None and f"{package}@{digest}" not in self.approved_package_digests:
            raise PolicyRefusal(
                "approved_package_digests",
                f"package {package!r} with digest {digest} is not approved",
            )
        if self.require_secure_aggregation:
            try:
                spec = secure_spec(session.model_config_)
            except ConfigError:
                spec = None  # an invalid section is not an enabled one
            if spec is None:
                raise PolicyRefusal(
                    "require_secure_aggregation",
                    "the session's model_config has no enabled secure_aggregation, so the "
                    "server would see this silo's individual contributions",
                )

    def guard(
        self,
        model_config: Any,
        summary_rows: Mapping[str, int],
        attributes: int,
        tables: Mapping[str, str | None],
        state_dir: Path,
        emit: Callable[[str], None] | None = None,
        column_values: Mapping[str, int] | None = None,
    ) -> PolicyGuard:
        """Check the session's privacy budget and this silo's tables, and return the guard of
        its releases.

        Parameters
        ----------
        model_config : the package's parsed model_config
        summary_rows : mapping of role to int
            The rows of each table (``train``/``dataset`` and ``test``), as joined.
        attributes : int
            The number of columns the session reads (the default ``min_rows`` adds 5).
        tables : mapping of role to path
            The tables given; the delta rule keys its history by the training table's.
        state_dir : Path
            The client's state directory (the history of released row counts).
        emit : callable, optional
            Told one line per refused release.
        column_values : mapping of str to int, optional
            The non-null values of each column the session reads: a column's statistics
            cover only those (eda analyses columns with nulls).

        Raises
        ------
        PolicyRefusal
        """
        epsilon = planned_epsilon(model_config)
        if epsilon is None and self.require_dp:
            raise PolicyRefusal("require_dp", "the session plans no differential privacy budget")
        if epsilon is not None and self.max_epsilon is not None and epsilon > self.max_epsilon:
            raise PolicyRefusal(
                "max_epsilon",
                f"the session plans epsilon {epsilon:g} on this silo, above {self.max_epsilon:g}",
            )
        min_rows = self.min_rows if self.min_rows is not None else attributes + MIN_ROWS_MARGIN
        source = _training_table(tables)
        train_rows = next((r for role, r in summary_rows.items() if role != "test" and r), None)
        guard = PolicyGuard(self, min_rows, source, ReleasedRows(state_dir), emit, train_rows)
        for role, rows in summary_rows.items():
            if rows > 0:
                guard.check_rows(rows, role, delta=role != "test", release=False)
        for column, values in (column_values or {}).items():
            if 0 < values < min_rows:
                raise PolicyRefusal(
                    "min_rows",
                    f"column {column!r} has {values} non-null value(s); at least {min_rows} "
                    "are required",
                )
        return guard


def planned_epsilon(model_config: Any) -> float | None:
    """The total epsilon a session's model_config plans to spend on each silo, or None.

    The packages spell it ``differential_privacy_params.epsilon`` (ffnet, glm: the budget for
    the whole session) or ``epsilon`` (eda: the budget per dataset; null turns DP off).
    """
    params = getattr(model_config, "differential_privacy_params", None)
    if params is not None:
        return float(params.epsilon)
    epsilon = getattr(model_config, "epsilon", None)
    if isinstance(epsilon, int | float) and not isinstance(epsilon, bool):
        return float(epsilon)
    return None


def load_policy(path: str | os.PathLike[str]) -> DataOwnerPolicy:
    """Read and validate a policy file; every problem is listed at once, naming its key.

    Raises
    ------
    ConfigError
        The file cannot be read, is not TOML, or a key is unknown or of the wrong value.
    """
    where = f"The policy file {os.fspath(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    try:
        return DataOwnerPolicy.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        raise ConfigError(
            f"{where} has {len(problems)} problem(s): " + "; ".join(problems)
        ) from None


def _problem(error: Any) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "<file>"
    if error["type"] == "extra_forbidden":
        known = ", ".join(DataOwnerPolicy.model_fields)
        return f"'{field}' is not a policy key (known: {known})"
    if error["type"] == "string_pattern_mismatch":
        return f"'{field}' must be NAME@SHA256 (64 lowercase hex digits), got {error['input']!r}"
    return f"'{field}': {error['msg']}, got {error['input']!r}"


def _training_table(tables: Mapping[str, str | None]) -> str | None:
    for role in ("train", "dataset"):
        if tables.get(role):
            return tables[role]
    return next((path for path in tables.values() if path), None)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REFUSAL_REASON_MAX else text[: REFUSAL_REASON_MAX - 3] + "..."


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
        with self._lock:
            released = self._read()
            counts = released.setdefault(source, [])
            if rows in counts:
                return
            counts.append(rows)
            counts.sort()
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = self.path.with_suffix(".partial")
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
