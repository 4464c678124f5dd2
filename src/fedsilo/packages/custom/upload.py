"""``upload_model``: test a custom package one epoch in a child process, then upload it.

The SDK's :meth:`fedsilo.sdk.Client.upload_model` is this module's :func:`upload_model`.
The test runs ``python -m fedsilo.packages.custom.trial`` (:mod:`.trial`) with the SDK's own
interpreter, so the package's code runs isolated from the notebook's process; a package
that fails it is refused with the reason and never leaves the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.errors import ConfigError
from fedsilo.packages.custom.archive import check_package_name, digest_of, pack_folder
from fedsilo.wire import PackagePublic

if TYPE_CHECKING:
    from fedsilo.http import ApiClient

__all__ = ["ModelTest", "upload_model"]

#: seconds the one-epoch test may take before it is stopped and the upload refused
TRIAL_TIMEOUT = 900.0


@dataclass(frozen=True)
class ModelTest:
    """What ``upload_model`` did.

    Attributes
    ----------
    metrics : dict
        The one-epoch test's fit reply and evaluation (``train_loss``, ``test_loss``,
        ``test_accuracy`` or ``test_r2``, ``parameters`` ...), on the given dataset.
    package : PackagePublic or None
        The uploaded package (its ``digest`` is what clients approve); None with
        ``test_only``.
    """

    metrics: dict[str, Any]
    package: PackagePublic | None


def upload_model(
    api: ApiClient,
    package_path: str,
    dataset_path: str,
    package_name: str,
    sample_model_config_path: str,
    sample_data_config_path: str,
    batch_size: int,
    task: str,
    test_only: bool,
    description: str,
) -> ModelTest:
    """See :meth:`fedsilo.sdk.Client.upload_model`."""
    check_package_name(package_name)
    if len(description) > 1024:
        raise ConfigError(f"The description is at most 1024 characters. Got {len(description)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1. Got {batch_size!r}.")
    folder = Path(package_path)
    archive = pack_folder(folder)  # refuses a missing folder or model.py, or a large one
    arguments = {
        "package_path": str(folder.resolve()),
        "dataset_path": dataset_path,
        "model_config": _read_json(sample_model_config_path, "sample_model_config_path"),
        "data_config": _read_json(sample_data_config_path, "sample_data_config_path"),
        "batch_size": batch_size,
        "task": task,
    }
    metrics = _trial(arguments, package_name)
    if test_only:
        return ModelTest(metrics, None)
    response = api.request(
        "POST",
        "/packages",
        content=archive,
        params={
            "name": package_name,
            "task": task,
            "description": description,
            "sha256": digest_of(archive),
        },
    )
    return ModelTest(metrics, PackagePublic.model_validate(response.json()))


def _trial(arguments: dict[str, Any], package_name: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fedsilo.packages.custom.trial"],
            input=json.dumps(arguments),
            capture_output=True,
            text=True,
            timeout=TRIAL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"Package {package_name!r} did not finish its one-epoch test within "
            f"{TRIAL_TIMEOUT:.0f} s; not uploaded."
        ) from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else None
    if result is None or not result.get("ok"):
        why = result["error"] if result else (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(
            f"Package {package_name!r} failed its one-epoch test, so it was not uploaded: {why}"
        )
    metrics: dict[str, Any] = result["result"]
    return metrics


def _read_json(path: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{field} {path!r} cannot be read: {exc.strerror}.") from exc
    except ValueError as exc:
        raise ConfigError(f"{field} {path!r} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{field} {path!r} must hold a JSON object.")
    return value
