"""The eda package's model_config and data_config.

The data_config is the seed documentation's ``dataset_config`` as written: dataset names
mapped to the columns to analyse, by name or by position, ``[]`` for all of them::

    {"dataset_one": [1, "x5", "x7"], "dataset_two": ["x1", "x10", "x11"]}

A dataset that joins under a name the config does not mention is analysed in full.
Positions are 0-based, as in ``DataFrame.iloc``: ``1`` is the *second* column of the file.

The model_config (built by ``client.create_eda_session``)::

    {
      "epsilon": 1.0,           # total privacy budget per dataset; null turns DP off
      "delta": 1e-6,            # for the threshold releases (sketch buckets, categories)
      "num_datasets": null,     # default: the number of datasets the data_config names
      "bins": 10,               # histogram bins of continuous columns
      "quantile_bins": 32,      # with DP: the grid quantiles come from (see analytics.quantiles)
      "categorical": null,      # column names; null detects them (non-numeric, or at most
      "max_categories": 20,     #   max_categories distinct values)
      "relative_accuracy": null,  # quantile sketch; null: 0.01 without DP, 0.2 with DP
      "policy": {"min_rows": 10, "min_count": 5},
      "secure_aggregation": {"enabled": false}  # see fedsilo.packages.eda.secure_server
    }

Under ``secure_aggregation.enabled`` the server learns only the sums over every dataset and
the results hold the pooled dataset alone (:mod:`fedsilo.packages.eda.secure_server`);
with ``epsilon`` set, ``categorical`` must then be declared (:mod:`fedsilo.config.secure`
says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fedsilo.errors import ConfigError, DataError
from fedsilo.federation import DataConfigBase
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.wire import CLIENT_NAME_PATTERN

__all__ = [
    "DP_RELATIVE_ACCURACY",
    "EXACT_RELATIVE_ACCURACY",
    "ColumnRef",
    "EdaDataConfig",
    "EdaModelConfig",
    "EdaPolicy",
    "check_consistency",
    "resolved_num_datasets",
]

#: sketch accuracy without DP: quantiles within 1% (relative) of the true order statistic
EXACT_RELATIVE_ACCURACY = 0.01
#: with DP the sketch only finds the column's range (quantiles come from a noisy grid over
#: it, see analytics.quantiles), so its buckets are wide: 20 times the rows of a 1% bucket
#: clear the privacy threshold. Measured on 20k rows of N(1, 2) over 3 silos at epsilon 1 and
#: 4 columns: 0.05 gave a range starting at 0.9 (every negative bucket suppressed; mean +0.7,
#: std -0.9, lower quartile +1.3 off), 0.2 a range of [-3.4, 5.1] (mean and std within 0.1).
DP_RELATIVE_ACCURACY = 0.2


def _column_ref(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError(
            "column_ref", "a column is a name (string) or a 0-based position (integer >= 0)"
        )
    if isinstance(value, int) and value < 0:
        raise PydanticCustomError("column_ref", "a column position must be >= 0")
    if isinstance(value, str) and not value:
        raise PydanticCustomError("column_ref", "a column name cannot be empty")
    return value


ColumnRef = Annotated[
    int | str,
    PlainValidator(_column_ref),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer", "minimum": 0}]}
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EdaPolicy(_Strict):
    """What every client enforces before and while it releases anything.

    Attributes
    ----------
    min_rows : int >= 1, default 10
        A dataset with fewer rows is refused, before its client joins.
    min_count : int >= 0, default 5
        A bin, sketch bucket or category count below it is never released un-noised. Without
        DP a histogram bin or category below it is withheld, and a sketch bucket below it is
        merged with its neighbours until the merged bucket holds ``min_count`` rows (no row
        is dropped; a quantile in a merged bucket is known to that bucket's width, which
        ``quantile_interval`` reports); 0 releases everything, for trusted data. With DP it
        is a floor of the threshold mechanism's threshold.
    """

    min_rows: int = Field(default=10, ge=1)
    min_count: int = Field(default=5, ge=0)


class EdaModelConfig(_Strict):
    """The eda model_config (see the module docstring).

    ``quantile_bins`` trades the two terms of the private quantiles' error bound: the bin
    width ``range / quantile_bins`` against the noise of a cumulative count, which grows as
    ``sqrt(quantile_bins)`` (:mod:`fedsilo.analytics.quantiles`); unused without DP.
    """

    epsilon: float | None = Field(default=1.0, gt=0, allow_inf_nan=False)
    delta: float = Field(default=1e-6, gt=0, lt=1)
    num_datasets: int | None = Field(default=None, ge=1, le=10_000)
    bins: int = Field(default=10, ge=1, le=1000)
    quantile_bins: int = Field(default=32, ge=1, le=10_000)
    categorical: list[str] | None = None
    max_categories: int = Field(default=20, ge=1, le=100_000)
    relative_accuracy: float | None = Field(default=None, gt=0, lt=1)
    policy: EdaPolicy = Field(default_factory=EdaPolicy)
    secure_aggregation: SecAggSpec = Field(default_factory=SecAggSpec)

    @property
    def secure(self) -> bool:
        """Whether the session's statistics are securely summed (pooled results only)."""
        return self.secure_aggregation.enabled

    @property
    def private(self) -> bool:
        """Whether differential privacy is on (``epsilon`` is set)."""
        return self.epsilon is not None

    def sketch_accuracy(self) -> float:
        """The quantile sketch's relative accuracy (see :data:`DP_RELATIVE_ACCURACY`)."""
        if self.relative_accuracy is not None:
            return self.relative_accuracy
        return DP_RELATIVE_ACCURACY if self.private else EXACT_RELATIVE_ACCURACY

    def detects_categoricals(self) -> bool:
        """Numeric columns are tested for few distinct values unless the session declares
        its categorical columns (then that list is complete)."""
        return self.categorical is None

    def is_declared_categorical(self, column: str) -> bool:
        return self.categorical is not None and column in self.categorical


class EdaDataConfig(DataConfigBase):
    """Dataset names mapped to the columns analysed in each (see the module docstring)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, list[ColumnRef]] = Field(init=False)

    @model_validator(mode="after")
    def _dataset_names(self) -> EdaDataConfig:
        for name in self.datasets:
            if not CLIENT_NAME_PATTERN.match(name):
                raise PydanticCustomError(
                    "dataset_name",
                    "dataset name {name} must start with a letter or digit and contain only "
                    "letters, digits and '_.@:-' (at most 128 characters)",
                    {"name": repr(name)},
                )
        return self

    @property
    def datasets(self) -> dict[str, list[int | str]]:
        """Dataset name -> the columns selected (``[]``: all of them)."""
        return dict(self.__pydantic_extra__ or {})

    def required_columns(self) -> list[str]:
        # Columns depend on the dataset a client brings (columns_for); nothing is required of
        # every client, so the platform's generic checks (join, summary) ask for none.
        return []

    def columns_for(self, dataset_name: str, available: Sequence[str]) -> list[str]:
        """The columns a client with dataset ``dataset_name`` analyses.

        Parameters
        ----------
        dataset_name : str
        available : sequence of str
            The dataset's column names, in file order.

        Returns
        -------
        list of str
            Without repeats, in the order the config lists them (file order for ``[]`` or a
            dataset the config does not name).

        Raises
        ------
        DataError
            Listing every named column the dataset lacks and every position out of range.
        """
        selection = self.datasets.get(dataset_name, [])
        source = f"dataset {dataset_name!r}"
        if not available:
            raise DataError([f"{source} has no columns"], source=source)
        if not selection:
            return list(dict.fromkeys(available))
        problems: list[str] = []
        chosen: list[str] = []
        for ref in selection:
            if isinstance(ref, int):
                if ref >= len(available):
                    problems.append(
                        f"data_config selects column position {ref} but {source} has "
                        f"{len(available)} column(s) (positions are 0-based)"
                    )
                    continue
                chosen.append(available[ref])
            elif ref in available:
                chosen.append(ref)
            else:
                shown = ", ".join(repr(c) for c in list(available)[:30])
                problems.append(f"{source} has no column {ref!r}; available columns: {shown}")
        if problems:
            raise DataError(problems, source=source)
        return list(dict.fromkeys(chosen))


def check_consistency(model_config: EdaModelConfig, data_config: EdaDataConfig) -> None:
    """Check the two configs fit together.

    Raises
    ------
    ConfigError
        When neither the data_config names a dataset nor ``num_datasets`` says how many.
    """
    if not data_config.datasets and model_config.num_datasets is None:
        raise ConfigError(
            "An EDA session needs the datasets to expect: name them in data_config "
            '(e.g. {"dataset_one": []}) or set model_config num_datasets. Got neither.'
        )


def resolved_num_datasets(model_config: EdaModelConfig, data_config: EdaDataConfig) -> int:
    """``num_datasets``, or the number of datasets the data_config names."""
    if model_config.num_datasets is not None:
        return model_config.num_datasets
    return max(len(data_config.datasets), 1)
