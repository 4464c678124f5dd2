"""``fedsilo config``: JSON Schemas of every package's configs, and checking config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsilo.cli.app import app
from fedsilo.cli.config import JSON_SCHEMA_DIALECT
from fedsilo.federation import get_package

runner = CliRunner()


@pytest.mark.parametrize("package", ["ffnet", "echo", "glm"])
def test_schema_prints_both_configs_as_the_api_does(package: str) -> None:
    result = runner.invoke(app, ["config", "schema", package])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"model_config", "data_config"}
    chosen = get_package(package)
    model = document["model_config"]
    assert model["$schema"] == JSON_SCHEMA_DIALECT
    expected = chosen.model_config_type.model_json_schema()
    assert model["properties"] == expected["properties"]
    assert (
        document["data_config"]["properties"]
        == (chosen.data_config_type.model_json_schema()["properties"])
    )


def test_schema_part_and_the_glm_constraints() -> None:
    result = runner.invoke(app, ["config", "schema", "glm", "--part", "model"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    params = schema["$defs"]["MLTaskParams"]
    assert params["properties"]["l1_ratio"]["maximum"] == 1.0
    assert schema["properties"]["solver"]["enum"] == ["newton", "sgd"]
    data = json.loads(runner.invoke(app, ["config", "schema", "glm", "--part", "data"]).stdout)
    assert data["required"] == ["predictors", "target"]


def test_unknown_package_and_part_are_usage_errors() -> None:
    result = runner.invoke(app, ["config", "schema", "gml"])
    assert result.exit_code == 2
    assert "Unknown package_name 'gml'. Known packages:" in result.output
    assert "glm" in result.output
    result = runner.invoke(app, ["config", "schema", "glm", "--part", "both"])
    assert result.exit_code == 2


def test_validate_names_the_field_and_the_value(tmp_path: Path) -> None:
    good = {
        "model": {"params": {"input_size": 2}},
        "ml_task": {"type": "poisson", "params": {"alpha": 0, "l1_ratio": 0}},
    }
    data = {"predictors": ["a", "b"], "target": "y", "exposure": "e"}
    model_path, data_path = tmp_path / "model.json", tmp_path / "data.json"
    model_path.write_text(json.dumps(good))
    data_path.write_text(json.dumps(data))
    args = ["config", "validate", "glm", "--model-config", str(model_path)]
    result = runner.invoke(app, [*args, "--data-config", str(data_path)])
    assert result.exit_code == 0, result.output
    assert "model_config and data_config are valid for package 'glm'" in result.stdout

    bad = {**good, "ml_task": {"type": "poisson", "params": {"alpha": -1, "l1_ratio": 2}}}
    model_path.write_text(json.dumps(bad))
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert (
        "ml_task.params.alpha: Input should be greater than or equal to 0 (got -1)" in result.output
    )
    assert (
        "ml_task.params.l1_ratio: Input should be less than or equal to 1 (got 2)" in result.output
    )

    model_path.write_text("{not json")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "is not JSON" in result.output
    result = runner.invoke(
        app, ["config", "validate", "glm", "--model-config", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "does not exist" in result.output
