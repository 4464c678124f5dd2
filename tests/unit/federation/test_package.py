"""The package registry and the package contract: lazy references, config parsing errors."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from fedsilo.errors import ConfigError
from fedsilo.federation import (
    REGISTRY,
    DataConfigBase,
    ModelPackage,
    SessionContext,
    get_package,
    package_names,
)
from fedsilo.wire import SessionKind


class TinyModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(default=1, ge=1)


class TinyDataConfig(DataConfigBase):
    model_config = ConfigDict(extra="forbid")

    column: str = "a"

    def required_columns(self) -> list[str]:
        return [self.column]


def _workflow(ctx: SessionContext, mc: TinyModelConfig, dc: TinyDataConfig) -> None:
    """Never run here."""


def tiny(
    executor_ref: str = "fedsilo.packages.echo.client:EchoExecutor",
    export_ref: str = "fedsilo.packages.echo.export:EchoModel",
    check: Any = None,
) -> ModelPackage[TinyModelConfig, TinyDataConfig]:
    return ModelPackage(
        name="tiny",
        description="a package made in a test",
        kind=SessionKind.hfl,
        model_config_type=TinyModelConfig,
        data_config_type=TinyDataConfig,
        workflow=_workflow,
        executor_ref=executor_ref,
        export_ref=export_ref,
        check=check,
    )


def test_the_registry_names_its_packages_sorted_and_each_answers_to_its_name() -> None:
    assert package_names() == sorted(REGISTRY)
    assert {"echo", "eda", "ffnet", "gbm", "glm", "linear_inference"} <= set(REGISTRY)
    for name in package_names():
        assert get_package(name).name == name


def test_an_unknown_package_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_package("ffnett")
    message = str(info.value)
    assert message.startswith("Unknown package_name 'ffnett'. Known packages: ")
    assert ", ".join(package_names()) in message


def test_references_are_imported_on_first_use_only() -> None:
    # colorsys stands in for a package's client half: a module nothing here imports.
    sys.modules.pop("colorsys", None)
    package = tiny(executor_ref="colorsys:rgb_to_hsv", export_ref="colorsys:hsv_to_rgb")
    package.parse_configs({}, {})
    assert "colorsys" not in sys.modules
    executor = package.executor
    assert "colorsys" in sys.modules
    assert executor is sys.modules["colorsys"].rgb_to_hsv
    assert package.export is sys.modules["colorsys"].hsv_to_rgb


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("fedsilo.packages.echo.client.EchoExecutor", "must be 'module:attribute'"),
        (":EchoExecutor", "must be 'module:attribute'"),
        ("fedsilo.packages.echo.client:", "must be 'module:attribute'"),
        ("fedsilo.packages.no_such_package:Executor", "cannot be imported: No module named"),
        ("fedsilo.packages.echo.client:NoSuchExecutor", "cannot be imported: module"),
    ],
)
def test_a_bad_reference_is_a_config_error_naming_the_field_and_value(
    ref: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _ = tiny(executor_ref=ref).executor
    text = str(info.value)
    assert text.startswith(f"Package 'tiny': executor_ref {ref!r}") or (
        text.startswith("Package 'tiny': executor_ref must be") and repr(ref) in text
    ), text
    assert message in text, text
    with pytest.raises(ConfigError, match="export_ref"):
        _ = tiny(export_ref=ref).export


def test_parse_errors_say_which_config_which_field_and_the_value() -> None:
    package = tiny()
    with pytest.raises(ConfigError) as info:
        package.parse_configs({"size": 0}, {})
    assert str(info.value) == (
        "model_config is invalid: size: Input should be greater than or equal to 1 (got 0)"
    )
    with pytest.raises(ConfigError) as info:
        package.parse_configs({}, {"column": "a", "colum": "b"})
    assert str(info.value) == (
        'data_config is invalid: colum: Extra inputs are not permitted (got "b")'
    )


def test_the_cross_check_runs_after_both_configs_parse() -> None:
    seen: list[tuple[int, str]] = []

    def check(mc: TinyModelConfig, dc: TinyDataConfig) -> None:
        seen.append((mc.size, dc.column))
        if mc.size > 2:
            raise ConfigError(f"size must be <= 2 for column {dc.column!r}. Got {mc.size}.")

    package = tiny(check=check)
    model_config, data_config = package.parse_configs({"size": 2}, {"column": "z"})
    assert (model_config.size, data_config.column) == (2, "z") and seen == [(2, "z")]
    with pytest.raises(ConfigError, match=r"size must be <= 2 for column 'z'\. Got 3\."):
        package.parse_configs({"size": 3}, {"column": "z"})
    with pytest.raises(ConfigError, match="model_config is invalid"):
        package.parse_configs({"size": -1}, {"column": "z"})
    assert len(seen) == 2  # not called when a config does not parse


def test_a_data_config_must_say_which_columns_it_reads() -> None:
    with pytest.raises(NotImplementedError):
        DataConfigBase().required_columns()
    assert TinyDataConfig(column="q").required_columns() == ["q"]
