"""Config errors name the field and the value given."""

from __future__ import annotations

from typing import Any

import pytest

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package

PACKAGE = get_package("linear_inference")
LOGIT = {"strategy": {"name": "LogitRegInference", "params": {}}, "seed": 23}
DATA = {"target": "y", "shared_predictors": ["x1", "x2"], "chunked_predictors": ["x0", "x3"]}


def test_the_seed_configs_parse() -> None:
    mc, dc = PACKAGE.parse_configs(LOGIT, DATA)
    assert mc.task == "logistic" and mc.reported_metrics() == ("loss", "accuracy", "roc_auc")
    assert dc.required_columns() == ["y", "x1", "x2", "x0", "x3"]
    _, indexed = PACKAGE.parse_configs(
        {"strategy": {"name": "LinearRegInference"}},
        {"target": 0, "shared_predictors": [], "chunked_predictors": [3, "x4"]},
    )
    assert indexed.required_columns() == ["x4"]


@pytest.mark.parametrize(
    ("model_config", "data_config", "expected"),
    [
        (
            {"strategy": {"name": "Logit"}},
            DATA,
            "strategy.name: Input should be 'LogitRegInference' or 'LinearRegInference' "
            '(got "Logit")',
        ),
        (
            {"strategy": {"name": "LogitRegInference", "params": {"alpha": 1}}},
            DATA,
            "strategy.params.alpha: Extra inputs are not permitted (got 1)",
        ),
        ({**LOGIT, "tol": 0}, DATA, "tol: Input should be greater than 0 (got 0)"),
        (
            {**LOGIT, "eval_metrics": ["r2"]},
            DATA,
            "eval_metrics: unknown metric(s) r2 for LogitRegInference",
        ),
        (LOGIT, {**DATA, "chunked_predictors": []}, "chunked_predictors: List should have at"),
        (
            LOGIT,
            {**DATA, "chunked_predictors": ["x0", -2]},
            "chunked_predictors.1: a column index must be >= 0 (got -2)",
        ),
        (
            LOGIT,
            {**DATA, "target": "1y"},
            "target: a column name must start with a letter",
        ),
        (
            LOGIT,
            {**DATA, "chunked_predictors": ["x0", "x1"]},
            "chunked_predictors.1: column 'x1' is already used as shared_predictors (got \"x1\")",
        ),
        (
            LOGIT,
            {**DATA, "shared_predictors": ["y"]},
            "shared_predictors.0: column 'y' is already used as target",
        ),
        (LOGIT, {**DATA, "predictors": ["x0"]}, "predictors: Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_field_and_value(
    model_config: dict[str, Any], data_config: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        PACKAGE.parse_configs(model_config, data_config)
    assert expected in str(caught.value)
