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
package's code is loaded): ``allowed_packages``, ``require_secure_aggregation``; an uploaded
package runs only if ``approved_package_digests`` (or the command line's
``--approve-package``) lists its ``NAME@SHA256`` (:mod:`fedsilo.packages.custom.source` checks the
downloaded archive's digest before loading its code). After the data is loaded, still before
joining (:meth:`DataOwnerPolicy.guard`): ``max_epsilon`` and ``require_dp`` on the package's
parsed privacy budget, ``min_rows`` on every table's row count and column's values, and the
delta rule on the training table. Then on every release, in the client's mods
(:class:`PolicyGuard`): ``min_rows`` and the delta rule on the rows the reply says it was
computed over, ``max_epsilon`` on the epsilon it reports spent, and
``require_secure_aggregation`` on every ``fit`` task (a server that announced secure
aggregation and then asks for a plain update is refused).

``min_rows`` -- seed 004's rule
-------------------------------
A release of exact statistics over too few rows can be inverted into the rows; the seed
requires at least *attributes + 5* rows (the attributes are the columns the session reads
from this silo), and the same for each incremental delta: statistics released over ``n`` rows and
later over ``m`` rows of the same table give the statistics of ``|n - m|`` rows by
difference. The client therefore remembers, in its state directory
(``policy/released_rows.json``), the row counts it released from each table (by its path)
across sessions, and refuses a release whose count differs from an earlier one by less than
``min_rows`` (an equal count is the same rows again). A reply's rows are the counts it
reports -- ``num_rows`` and ``num_examples`` for the training table, ``test_num_examples``
for the test table -- and a reply that reports none was computed over the whole table.
A column's statistics cover only its non-null values: every column the session reads needs
``min_rows`` of them, and an exact eda release is held column by column. The rule holds
for every release, noised or not: it is the owner's floor (eda's noisy column counts
excepted). The per-release mods and the history are in :mod:`fedsilo.client.release_guard`.

Refusals
--------
A refusal names its rule and why, in one line without data: before joining it is a
:class:`PolicyRefusal` (the runtime tells the server, ``POST /sessions/{sid}/refusals``,
and stops); during the session the task's reply fails with it as its error.

``approved_package_digests`` joins ``fedsilo client``'s ``--approve-package`` pins (the CLI
builds the client's package approval from both); built-in packages carry no digest.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from fedsilo.client.release_guard import PolicyGuard, PolicyRefusal, ReleasedRows
from fedsilo.config.secure import secure_spec
from fedsilo.errors import ConfigError
from fedsilo.wire import SessionPublic

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

PackageDigest = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}@[0-9a-f]{64}$", strict=True)
]


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
        ``NAME@SHA256`` (64 lowercase hex) of the uploaded packages this silo runs, as
        ``--approve-package`` (the CLI adds them to its approval).
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
    """The training table's location, the key of its released rows (a local path absolute,
    so the same table given from another working directory is the same table)."""
    given = [tables.get("train"), tables.get("dataset"), *tables.values()]
    path = next((p for p in given if p), None)
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)
