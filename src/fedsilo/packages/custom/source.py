"""How ``get_package`` finds uploaded packages (:data:`fedsilo.federation.PACKAGE_SOURCES`).

* On the server, :class:`StoredPackages` reads the package's metadata from the artifact store
  and answers with :func:`fedsilo.packages.custom.server_package`: configs and the generic
  workflow, no uploaded code.
* On a client, :class:`ApprovedPackages` asks the server whether the name is an uploaded
  package and, when this client's operator approved it (``--approve-custom-package``, or
  ``--approve-package NAME@SHA256`` for that digest only), downloads the archive, checks its
  digest, unpacks it into the client's state directory and imports it. Without approval it
  raises a :class:`ConfigError` naming the package and its digest to review, which the client
  runtime sends as its refusal before joining.

Trust model: an approved package's code runs in the client process, with the client's
permissions on the silo (its files, its network). Approve a digest you reviewed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.errors import ConfigError, NotFoundError
from fedsilo.federation import PACKAGE_SOURCES, REGISTRY, ModelPackage
from fedsilo.packages.custom import CustomDataConfig, CustomModelConfig, server_package
from fedsilo.packages.custom.archive import PACKAGE_NAME_PATTERN, digest_of, unpack_archive

if TYPE_CHECKING:
    from fedsilo.http import ApiClient
    from fedsilo.server.state.artifacts import ArtifactStore

__all__ = [
    "ApprovedPackages",
    "PackageApproval",
    "StoredPackages",
    "archive_key",
    "list_stored",
    "meta_key",
    "package_source",
    "read_meta",
    "unapproved_executor",
]


def archive_key(name: str) -> str:
    return f"packages/{name}/archive.tar.gz"


def meta_key(name: str) -> str:
    return f"packages/{name}/meta.json"


def read_meta(artifacts: ArtifactStore, name: str) -> dict[str, Any] | None:
    """The stored metadata of uploaded package ``name``, or None."""
    if not PACKAGE_NAME_PATTERN.match(name) or name in REGISTRY:
        return None
    data = artifacts.read_bytes(meta_key(name))
    if data is None:
        return None
    meta: dict[str, Any] = json.loads(data)
    return meta


def list_stored(artifacts: ArtifactStore) -> list[dict[str, Any]]:
    """Every uploaded package's metadata, by name."""
    folder = f"{artifacts.root}/packages"
    if not artifacts.fs.exists(folder):
        return []
    names = sorted(
        str(path).rstrip("/").rsplit("/", 1)[-1] for path in artifacts.fs.ls(folder, detail=False)
    )
    found = (read_meta(artifacts, name) for name in names)
    return [meta for meta in found if meta is not None]


class StoredPackages:
    """The server's source: uploaded packages by their metadata in ``artifacts``."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    def __call__(self, name: str) -> ModelPackage[Any, Any] | None:
        meta = read_meta(self.artifacts, name)
        if meta is None:
            return None
        return server_package(name, str(meta.get("description", "")))


@contextmanager
def package_source(source: Callable[[str], ModelPackage[Any, Any] | None]) -> Iterator[None]:
    """``source`` consulted by ``get_package`` while the block runs, before the others (a
    client's approving source goes before a server's in the same process, as in tests)."""
    PACKAGE_SOURCES.insert(0, source)
    try:
        yield
    finally:
        PACKAGE_SOURCES.remove(source)


def unapproved_executor(*args: Any, **kwargs: Any) -> Any:
    raise ConfigError(
        "This session trains an uploaded custom package: run the client with "
        "--approve-custom-package or --approve-package NAME@SHA256 to run its code."
    )


@dataclass(frozen=True)
class PackageApproval:
    """What the client's operator approved: any package, or these ``name@sha256`` pins."""

    any_package: bool = False
    digests: tuple[str, ...] = ()

    @staticmethod
    def parse(any_package: bool, pins: list[str] | tuple[str, ...]) -> PackageApproval:
        for pin in pins:
            name, sep, digest = pin.partition("@")
            if not sep or not PACKAGE_NAME_PATTERN.match(name) or len(digest) != 64:
                raise ConfigError(
                    "--approve-package takes NAME@SHA256 (the package name and the 64 hex "
                    f"digits `fedsilo package list` shows). Got {pin!r}."
                )
        return PackageApproval(any_package, tuple(p.lower() for p in pins))

    def allows(self, name: str, digest: str) -> bool:
        return self.any_package or f"{name}@{digest}" in self.digests


class ApprovedPackages:
    """The client's source (see the module docstring).

    Parameters
    ----------
    api : ApiClient
    state_dir : Path
        The package is unpacked under ``state_dir/packages/NAME-DIGEST``.
    approval : PackageApproval
    emit : callable
        Progress lines (the package's name and digest when it runs).
    """

    def __init__(
        self,
        api: ApiClient,
        state_dir: Path,
        approval: PackageApproval,
        emit: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.api, self.state_dir, self.approval, self.emit = api, state_dir, approval, emit
        self._loaded: dict[str, ModelPackage[Any, Any]] = {}

    def __call__(self, name: str) -> ModelPackage[Any, Any] | None:
        if name in self._loaded:
            return self._loaded[name]
        if not PACKAGE_NAME_PATTERN.match(name) or name in REGISTRY:
            return None
        listed = {p["name"]: p for p in self.api.get_json("/packages") if p.get("digest")}
        entry = listed.get(name)
        if entry is None:
            return None
        digest = str(entry["digest"])
        if not self.approval.allows(name, digest):
            raise ConfigError(
                f"The session trains the uploaded package {name!r} (sha256 {digest}), whose "
                "code would run on this silo with this client's permissions; review it and "
                f"rerun with --approve-package {name}@{digest} (or --approve-custom-package)."
            )
        try:
            data = self.api.request("GET", f"/packages/{name}/archive").content
        except NotFoundError as exc:
            raise ConfigError(f"The archive of package {name!r} is gone: {exc}") from exc
        got = digest_of(data)
        if got != digest:
            raise ConfigError(
                f"The archive of package {name!r} downloaded with sha256 {got}, not the "
                f"approved {digest}; refused."
            )
        folder = self.state_dir / "packages" / f"{name}-{digest}"
        shutil.rmtree(folder, ignore_errors=True)  # never run files left there before
        unpack_archive(data, folder)
        package = approved_package(name, entry.get("description", ""), folder)
        self.emit(f"running uploaded package {name} sha256 {digest} (approved) from {folder}")
        self._loaded[name] = package
        return package


def approved_package(name: str, description: str, folder: Path) -> ModelPackage[Any, Any]:
    """The client's package for an approved, unpacked folder: the folder imported, its data
    binding and an executor that runs it."""
    from functools import partial

    from fedsilo.packages.custom.binding import custom_binding
    from fedsilo.packages.custom.loader import load_package

    loaded = load_package(folder)
    binding = custom_binding(loaded)
    base = server_package(name, description)
    return _ClientPackage(
        **{f: getattr(base, f) for f in base.__dataclass_fields__ if f != "binding"},
        binding=binding,
        factory=partial(_make_executor, loaded=loaded, binding=binding),
    )


@dataclass(frozen=True)
class _ClientPackage(ModelPackage[CustomModelConfig, CustomDataConfig]):
    factory: Any = None

    @property
    def executor(self) -> Any:
        return self.factory


def _make_executor(
    model_config: CustomModelConfig,
    data_config: CustomDataConfig,
    dataset: Any,
    context: Any = None,
    *,
    loaded: Any,
    binding: Any,
) -> Any:
    from fedsilo.packages.custom.executor import CustomExecutor, dataset_tensors

    tensors = None
    if binding.datasets:
        task = model_config.ml_task.type
        tensors = {
            role: dataset_tensors(ds, task, f"dataset.py {role}")
            for role, ds in binding.datasets.items()
        }
    return CustomExecutor(
        model_config, data_config, dataset, context, package=loaded, tensors=tensors
    )
