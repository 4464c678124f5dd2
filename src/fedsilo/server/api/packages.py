"""Packages: what model packages this server runs, and their config JSON Schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package, package_names
from fedsilo.server.api.deps import ACCESS_RESPONSES, AnyToken, errors
from fedsilo.wire import PackagePublic

router = APIRouter(prefix="/packages", tags=["packages"], responses=ACCESS_RESPONSES)


@router.get("")
def list_packages(_: AnyToken) -> list[PackagePublic]:
    packages = [get_package(name) for name in package_names()]
    return [PackagePublic(name=p.name, description=p.description, kind=p.kind) for p in packages]


@router.get("/{name}/schema", responses=errors(404))
def package_schema(name: str, _: AnyToken) -> dict[str, Any]:
    try:
        package = get_package(name)
    except ConfigError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return {
        "model_config": package.model_config_type.model_json_schema(),
        "data_config": package.data_config_type.model_json_schema(),
    }


__all__ = ["router"]
