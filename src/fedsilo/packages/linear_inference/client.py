"""The client half of linear_inference: the bundle's Newton statistics on a silo's rows.

Task kinds
----------
``bundle_stats``
    Array ``betas`` (n_chunked, k) and ``active`` (n_chunked,) (1.0 for models still fitted,
    0.0 for singular or failed ones); meta ``{"round", "evaluate": bool}``. Replies arrays
    ``gradient`` (n_chunked, k), ``fisher`` (n_chunked, k, k), ``deviance`` (n_chunked,) of the
    training rows at ``betas`` (see :mod:`fedsilo.packages.linear_inference.bundle`), meta
    ``{"num_rows", "columns": {"target", "shared", "chunked"}}`` (the resolved column names,
    never values) and, when ``evaluate``, the bundle's mean test metrics
    (:func:`~fedsilo.packages.linear_inference.bundle.bundle_evaluation`) on the test rows,
    or the training rows when the client has no test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.data.dataset import LocalDataset
from fedsilo.data.validation import find_problems
from fedsilo.errors import DataError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.linear_inference.bundle import (
    ChunkedDesign,
    bundle_evaluation,
    bundle_statistics,
)
from fedsilo.packages.linear_inference.config import (
    Column,
    LinearInferenceDataConfig,
    LinearInferenceModelConfig,
)
from fedsilo.regression.families import make_family
from fedsilo.wire import Arrays

__all__ = ["KINDS", "LinearInferenceExecutor", "ResolvedColumns", "resolve_columns"]

#: the task kinds the executor handles
KINDS = ("bundle_stats",)

ResolvedColumns = tuple[str, list[str], list[str]]


def resolve_columns(
    columns: Sequence[object], data_config: LinearInferenceDataConfig
) -> tuple[ResolvedColumns | None, list[str]]:
    """Turn the data_config's names and 0-based indices into column names of a table.

    Returns
    -------
    ((target, shared, chunked) or None, list of str)
        The names, or None with every problem (index out of range, a column in two roles).
    """
    present = [str(c) for c in columns]
    problems: list[str] = []

    def name(field: str, column: Column) -> str:
        if isinstance(column, int):
            if column >= len(present):
                problems.append(
                    f"data_config.{field}: column index {column} is out of range for a table "
                    f"of {len(present)} column(s)"
                )
                return f"<{column}>"
            return present[column]
        return column

    target = name("target", data_config.target)
    shared = [
        name(f"shared_predictors[{i}]", c) for i, c in enumerate(data_config.shared_predictors)
    ]
    chunked = [
        name(f"chunked_predictors[{i}]", c) for i, c in enumerate(data_config.chunked_predictors)
    ]
    roles: dict[str, str] = {}
    for role, names in (("target", [target]), ("shared_predictors", shared), ("chunked", chunked)):
        for column in names:
            if column in roles:
                problems.append(
                    f"data_config.{role}: column {column!r} is already used as {roles[column]}"
                )
            roles.setdefault(column, role)
    if problems:
        return None, problems
    return (target, shared, chunked), []


def chunked_design(frame: pd.DataFrame, resolved: ResolvedColumns) -> ChunkedDesign:
    """The float64 arrays of a validated frame (intercept column first in ``shared``)."""
    target, shared, chunked = resolved
    design = np.ones((len(frame), 1 + len(shared)))
    if shared:
        design[:, 1:] = frame[shared].to_numpy(dtype=np.float64)
    values = np.ascontiguousarray(frame[chunked].to_numpy(dtype=np.float64))
    return ChunkedDesign(design, values, frame[target].to_numpy(dtype=np.float64))


class LinearInferenceExecutor:
    """Runs linear_inference tasks on one silo's data; the frames are validated once, here.

    Parameters
    ----------
    model_config : LinearInferenceModelConfig
    data_config : LinearInferenceDataConfig
    dataset : LocalDataset
        ``train`` (required), ``test`` (optional).

    Raises
    ------
    DataError
        Listing every problem of both frames: bad indices, missing / non-numeric / null
        columns, a logistic target other than 0/1, and a training set with no more rows than
        coefficients per model.
    """

    def __init__(
        self,
        model_config: LinearInferenceModelConfig,
        data_config: LinearInferenceDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        self.model_config = model_config
        self.family = make_family(model_config.task)
        self.wanted = model_config.reported_metrics()
        resolved, problems = resolve_columns(list(dataset.train.columns), data_config)
        frames = {"train": dataset.train}
        if dataset.test is not None and len(dataset.test) > 0:
            frames["test"] = dataset.test
        prepared: dict[str, ChunkedDesign] = {}
        if resolved is not None:
            target, shared, chunked = resolved
            for split, frame in frames.items():
                found = find_problems(frame, [target, *shared, *chunked], source=split)
                if not found:
                    y = frame[target].to_numpy(dtype=np.float64)
                    problem = self.family.target_problem(y)
                    if problem is not None:
                        found.append(f"{split}: target column {target!r} {problem}")
                problems += found
                if not found:
                    prepared[split] = chunked_design(frame, resolved)
            k = 2 + len(shared)
            if 0 < len(dataset.train) <= k:
                # No more rows than coefficients: the statistics could reveal single rows.
                problems.append(
                    f"train: has {len(dataset.train)} row(s); a linear_inference client needs "
                    f"more rows than coefficients per model ({k})"
                )
        if problems or resolved is None:
            raise DataError(problems, source="linear_inference client data")
        self.columns = resolved
        self.train = prepared["train"]
        self.eval_data = prepared.get("test", self.train)
        self.evaluated_on = "test" if "test" in prepared else "train"

    @property
    def num_coefficients(self) -> int:
        return int(self.train.shared.shape[1]) + 1

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        """Run one task (see the module docstring).

        Raises
        ------
        TaskError
            On an unknown kind or malformed ``betas`` / ``active``.
        """
        if kind != "bundle_stats":
            raise TaskError(
                f"The linear_inference client cannot run task kind {kind!r}; known kinds: "
                f"{', '.join(KINDS)}."
            )
        betas, active = self._parse(arrays)
        stats = bundle_statistics(self.family, self.train, betas)
        target, shared, chunked = self.columns
        reply: dict[str, Any] = {
            "num_rows": stats.num_rows,
            "columns": {"target": target, "shared": shared, "chunked": chunked},
        }
        if meta.get("evaluate", False):
            reply.update(bundle_evaluation(self.family, self.eval_data, betas, active, self.wanted))
            reply["test_num_examples"] = self.eval_data.num_rows
            reply["evaluated_on"] = self.evaluated_on
        return reply, {
            "gradient": stats.gradient,
            "fisher": stats.fisher,
            "deviance": stats.deviance,
        }

    def _parse(self, arrays: Arrays) -> tuple[np.ndarray, np.ndarray]:
        m = self.train.chunked.shape[1]
        expected = {"betas": (m, self.num_coefficients), "active": (m,)}
        for name, shape in expected.items():
            array = arrays.get(name)
            if array is None or np.shape(array) != shape:
                got = "missing" if array is None else f"shape {np.shape(array)}"
                raise TaskError(
                    f"The bundle_stats task must carry array {name!r} of shape {shape}; got {got}."
                )
        betas = np.asarray(arrays["betas"], dtype=np.float64)
        if not np.all(np.isfinite(betas)):
            raise TaskError("The bundle_stats task's 'betas' holds non-finite values.")
        return betas, np.asarray(arrays["active"]) > 0.5
