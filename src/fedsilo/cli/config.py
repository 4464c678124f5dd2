"""``fedsilo config``: the JSON Schema of a package's configs, and checking config files.

The schemas come from the pydantic models the server validates with, so they cannot drift
from what a session accepts. Cross-field rules (a link that does not suit a family, the
input size against the predictors) are not expressible in JSON Schema; ``validate`` runs
them too.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from fedsilo.errors import ConfigError

__all__ = ["JSON_SCHEMA_DIALECT", "app", "package_schema", "schema", "validate"]

#: the dialect pydantic's ``model_json_schema`` emits
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Model packages' config schemas, and checking config files against them.",
    no_args_is_help=True,
)


class Part(StrEnum):
    model = "model"
    data = "data"


def package_schema(package_name: str, part: str | None = None) -> dict[str, Any]:
    """The JSON Schema of a package's configs.

    Parameters
    ----------
    package_name : str
        A registered package (``fedsilo.packages.package_names()``).
    part : {"model", "data"}, optional
        Only the model_config's or the data_config's schema. Default: both, as
        ``{"model_config": ..., "data_config": ...}`` (the shape of
        ``GET /api/v1/packages/{name}/schema``).

    Raises
    ------
    ConfigError
        When the package is unknown (the message lists the known ones).
    """
    from fedsilo.federation import get_package

    package = get_package(package_name)
    schemas = {
        "model": package.model_config_type.model_json_schema(),
        "data": package.data_config_type.model_json_schema(),
    }
    for kind, document in schemas.items():
        document.setdefault("title", f"{package.name} {kind}_config")
        schemas[kind] = {"$schema": JSON_SCHEMA_DIALECT, **document}
    if part is not None:
        chosen: dict[str, Any] = schemas[part]
        return chosen
    return {"model_config": schemas["model"], "data_config": schemas["data"]}


@app.command()
def schema(
    package: Annotated[str, typer.Argument(help="Package name, e.g. 'glm' or 'ffnet'.")],
    part: Annotated[
        Part | None,
        typer.Option(
            "--part",
            help="Print only the model_config or the data_config schema. Default: both.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the JSON Schema of a package's model_config and data_config."""
    document = package_schema(package, None if part is None else part.value)
    typer.echo(json.dumps(document, indent=2))


def _read_json(path: Path, option: str) -> dict[str, Any]:
    try:
        text = path.expanduser().read_text()
    except FileNotFoundError:
        raise ConfigError(f"{option} {str(path)!r} does not exist.") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} {str(path)!r} is not JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{option} {str(path)!r} must hold a JSON object; got {type(value).__name__}."
        )
    return value


@app.command()
def validate(
    package: Annotated[str, typer.Argument(help="Package name, e.g. 'glm' or 'ffnet'.")],
    model_config: Annotated[
        Path, typer.Option("--model-config", help="JSON file with the model_config.")
    ],
    data_config: Annotated[
        Path | None,
        typer.Option(
            "--data-config",
            help="JSON file with the data_config; with it, the two are also cross-checked.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check config files as the server would; exit 2 with every problem named when invalid."""
    from fedsilo.federation import get_package

    chosen = get_package(package)
    model_raw = _read_json(model_config, "--model-config")
    if data_config is None:
        chosen.parse_model_config(model_raw)
        typer.echo(f"model_config is valid for package {package!r}.")
        return
    chosen.parse_configs(model_raw, _read_json(data_config, "--data-config"))
    typer.echo(f"model_config and data_config are valid for package {package!r}.")
