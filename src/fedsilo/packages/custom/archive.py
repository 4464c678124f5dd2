"""A custom package's archive: the folder as a deterministic gzipped tar, its digest, unpacking.

The archive holds the package folder's regular files (no links, no devices, no hidden
files or ``__pycache__``), sorted, with zeroed times and owners, so the same folder always
packs to the same bytes and the same SHA-256 digest; that digest is what a client operator
approves (``--approve-package NAME@SHA256``). Unpacking refuses absolute paths, ``..`` and
anything but regular files and folders, so an archive cannot write outside its folder.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from pathlib import Path, PurePosixPath

from fedsilo.errors import ConfigError

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "PACKAGE_NAME_PATTERN",
    "archive_files",
    "check_package_name",
    "digest_of",
    "pack_folder",
    "unpack_archive",
]

#: the largest archive the server stores (a model definition and small JSON files, not data)
MAX_ARCHIVE_BYTES = 2 * 1024 * 1024
#: the seed's naming rule: lowercase letters, digits and underscores, starting with a letter
PACKAGE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SKIPPED = {"__pycache__"}


def check_package_name(name: str) -> str:
    """``name`` when it is a valid custom package name; else ConfigError naming the rule."""
    if not PACKAGE_NAME_PATTERN.match(name):
        raise ConfigError(
            "The package_name must be lowercase letters, digits and underscores, starting "
            f"with a letter, at most 64 characters (no spaces, hyphens or dots). Got {name!r}."
        )
    return name


def digest_of(data: bytes) -> str:
    """The archive's SHA-256, as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def pack_folder(folder: Path) -> bytes:
    """The folder's files as a deterministic ``.tar.gz`` (see the module docstring).

    Raises
    ------
    ConfigError
        When the folder does not exist, holds no ``model.py``, or packs to more than
        :data:`MAX_ARCHIVE_BYTES`.
    """
    if not folder.is_dir():
        raise ConfigError(f"The package_path must be a folder. Got {str(folder)!r}.")
    if not (folder / "model.py").is_file():
        raise ConfigError(f"The package folder {str(folder)!r} must hold a model.py.")
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and not any(
            part.startswith(".") or part in _SKIPPED for part in path.relative_to(folder).parts
        )
    )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), mtime=0)
    if len(packed) > MAX_ARCHIVE_BYTES:
        raise ConfigError(
            f"The package folder packs to {len(packed):,} bytes; a package archive is at most "
            f"{MAX_ARCHIVE_BYTES:,} bytes (keep data out of the package folder)."
        )
    return packed


def archive_files(data: bytes) -> list[str]:
    """The files of an archive made by :func:`pack_folder`, checked without unpacking.

    Raises
    ------
    ConfigError
        When the bytes are not a gzipped tar, a member is a link, a device, an absolute path
        or climbs out with ``..``, or there is no top-level ``model.py``.
    """
    with _open(data) as tar:
        files = [member.name for member in _checked(tar) if member.isfile()]
    if "model.py" not in files:
        raise ConfigError("The package archive holds no model.py at its top level.")
    return files


def unpack_archive(data: bytes, destination: Path) -> Path:
    """Unpack an archive made by :func:`pack_folder` into ``destination`` (created).

    Raises
    ------
    ConfigError
        As :func:`archive_files`.
    """
    archive_files(data)
    with _open(data) as tar:
        destination.mkdir(parents=True, exist_ok=True)
        for member in _checked(tar):
            target = destination.joinpath(*PurePosixPath(member.name).parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file, checked
            target.write_bytes(source.read())
    return destination


def _open(data: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError(f"The package archive is not a gzipped tar: {exc}") from exc


def _checked(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    try:
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError(f"The package archive is not a gzipped tar: {exc}") from exc
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise ConfigError(
                f"The package archive holds {member.name!r}, which is not a plain file inside "
                "the package folder; refused."
            )
    return members
