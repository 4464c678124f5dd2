"""Packages: what model packages this server runs, their config JSON Schemas, and the
uploaded custom packages (README "Custom model packages").

An upload (``POST /packages?name=...``, the archive as ``application/octet-stream``, scope
``custom_model``) is stored in the artifact store as the archive and a metadata document
with its SHA-256 digest; the server checks the archive's shape (a gzipped tar of plain
files with a ``model.py``) and never imports it. Clients download it from
``GET /packages/{name}/archive`` (scope ``client``) and run it only when their operator
approved it.
"""

from __future__ import annotations

import json
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package, package_names
from fedsilo.packages.custom.archive import (
    MAX_ARCHIVE_BYTES,
    archive_files,
    check_package_name,
    digest_of,
)
from fedsilo.packages.custom.config import unsupported_task
from fedsilo.packages.custom.source import archive_key, list_stored, meta_key, read_meta
from fedsilo.scopes import Scope
from fedsilo.server import audit
from fedsilo.server.access import Principal, allow
from fedsilo.server.api.deps import ACCESS_RESPONSES, AnyToken, ArtifactsDep, errors
from fedsilo.server.state.records import utcnow
from fedsilo.wire import PackagePublic, SessionKind

router = APIRouter(prefix="/packages", tags=["packages"], responses=ACCESS_RESPONSES)

CustomModelToken = Annotated[Principal, Depends(allow(Scope.custom_model, action="package.upload"))]
ArchiveReader = Annotated[Principal, Depends(allow(Scope.client, Scope.custom_model))]
#: one upload at a time, so two uploads of one name cannot both pass the uniqueness check
_UPLOADS = threading.Lock()


@router.get("")
def list_packages(_: AnyToken, artifacts: ArtifactsDep) -> list[PackagePublic]:
    packages = [get_package(name) for name in package_names()]
    builtin = [PackagePublic(name=p.name, description=p.description, kind=p.kind) for p in packages]
    return builtin + [_public(meta) for meta in list_stored(artifacts)]


@router.post("", status_code=201, responses=errors(400, 409, 413))
async def upload_package(
    request: Request,
    principal: CustomModelToken,
    artifacts: ArtifactsDep,
    name: Annotated[str, Query(description="package_name: lowercase letters, digits, _")],
    task: Annotated[str, Query(description="classification or regression")],
    description: Annotated[str, Query(max_length=1024)] = "",
    sha256: Annotated[
        str | None, Query(description="the archive's digest as the uploader computed it")
    ] = None,
) -> PackagePublic:
    """Store a custom package archive (the body, ``application/octet-stream``)."""
    data = await request.body()
    if len(data) > MAX_ARCHIVE_BYTES:
        raise HTTPException(
            status_code=413,
            detail=f"A package archive is at most {MAX_ARCHIVE_BYTES} bytes. Got {len(data)}.",
        )
    try:
        check_package_name(name)
        files = archive_files(data)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    if (problem := unsupported_task(task)) is not None:
        raise HTTPException(status_code=422, detail=f"task: {problem}.")
    digest = digest_of(data)
    if sha256 is not None and sha256.lower() != digest:
        raise HTTPException(
            status_code=422,
            detail=f"The body's sha256 is {digest}, not the {sha256!r} given: the upload was "
            "damaged in transit.",
        )
    meta = {
        "name": name,
        "description": description,
        "task": task,
        "digest": digest,
        "size": len(data),
        "files": files,
        "uploaded_by": principal.user_name,
        "uploader_id": principal.user_id,
        "created_at": utcnow().isoformat(),
    }
    with _UPLOADS:
        if name in package_names() or read_meta(artifacts, name) is not None:
            raise HTTPException(
                status_code=409,
                detail=f"A package named {name!r} exists; package names are unique, upload "
                "under another name.",
            )
        artifacts.write_bytes(archive_key(name), data)
        artifacts.write_bytes(meta_key(name), json.dumps(meta).encode())  # last: it lists it
    audit.record(request, principal, "package.upload", name, detail=f"sha256 {digest}")
    return _public(meta)


@router.get(
    "/{name}/archive",
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(404)},
    response_class=Response,
)
def package_archive(name: str, _: ArchiveReader, artifacts: ArtifactsDep) -> Response:
    """The archive of an uploaded package, with its digest in ``X-Fedsilo-Sha256``."""
    meta = read_meta(artifacts, name)
    data = artifacts.read_bytes(archive_key(name)) if meta is not None else None
    if meta is None or data is None:
        raise HTTPException(status_code=404, detail=f"No uploaded package named {name!r}.")
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"X-Fedsilo-Sha256": str(meta["digest"])},
    )


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


def _public(meta: dict[str, Any]) -> PackagePublic:
    return PackagePublic(
        name=meta["name"],
        description=meta.get("description", ""),
        kind=SessionKind.hfl,
        custom=True,
        digest=meta["digest"],
        size=meta.get("size"),
        task=meta.get("task"),
        uploaded_by=meta.get("uploaded_by"),
        created_at=meta.get("created_at"),
    )


__all__ = ["router"]
