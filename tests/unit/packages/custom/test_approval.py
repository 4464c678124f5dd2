"""A client runs an uploaded package only when approved (fedsilo.packages.custom.source),
against the real thread server: the refusal names the digest, a pin of another digest is
refused, a tampered archive is refused, an approved one is unpacked and found by
get_package."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.http import ApiClient
from fedsilo.packages.custom.archive import digest_of, pack_folder
from fedsilo.packages.custom.source import (
    ApprovedPackages,
    PackageApproval,
    archive_key,
    package_source,
)

EXAMPLE = Path(__file__).parents[4] / "examples" / "custom_packages" / "digitscnn"


def _upload(url: str, token: str, name: str) -> str:
    archive = pack_folder(EXAMPLE)
    with httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}) as h:
        made = h.post(
            "/packages",
            content=archive,
            params={"name": name, "task": "classification"},
            headers={"Content-Type": "application/octet-stream"},
        )
    assert made.status_code == 201, made.text
    return digest_of(archive)


def test_only_an_approved_digest_runs(thread_server, scoped_tokens, tmp_path: Path) -> None:
    url = thread_server.url
    uploader = scoped_tokens(url, thread_server.token, ["custom_model"], "modeller")
    digest = _upload(url, uploader, "approvalcnn")
    silo = scoped_tokens.client(url, thread_server.token, "silo0")
    lines: list[str] = []
    with ApiClient(url, silo) as api:
        unapproved = ApprovedPackages(api, tmp_path, PackageApproval())
        with pytest.raises(ConfigError, match=f"--approve-package approvalcnn@{digest}"):
            unapproved("approvalcnn")
        other = PackageApproval.parse(False, [f"approvalcnn@{'0' * 64}"])
        with pytest.raises(ConfigError, match=digest):
            ApprovedPackages(api, tmp_path, other)("approvalcnn")
        assert unapproved("ffnet") is None and unapproved("nosuch") is None
        assert not (tmp_path / "packages").exists()  # nothing downloaded without approval

        pinned = PackageApproval.parse(False, [f"approvalcnn@{digest}"])
        source = ApprovedPackages(api, tmp_path, pinned, lines.append)
        with package_source(source):
            package = get_package("approvalcnn")
        assert (tmp_path / "packages" / f"approvalcnn-{digest}" / "model.py").is_file()
        assert lines == [
            f"running uploaded package approvalcnn sha256 {digest} (approved) from "
            f"{tmp_path / 'packages' / f'approvalcnn-{digest}'}"
        ]
        assert package.binding.package.model_class.__name__ == "DigitsCNN"  # type: ignore[attr-defined]

        # The server's copy changed after approval: its digest no longer matches.
        thread_server.app_state.artifacts.write_bytes(archive_key("approvalcnn"), b"other bytes")
        fresh = ApprovedPackages(api, tmp_path, PackageApproval(any_package=True))
        with pytest.raises(ConfigError, match=f"not the approved {digest}"):
            fresh("approvalcnn")


@pytest.mark.parametrize("pin", ["approvalcnn", "approvalcnn@abc", "Bad-Name@" + "0" * 64])
def test_a_malformed_pin_is_refused(pin: str) -> None:
    with pytest.raises(ConfigError, match="--approve-package takes NAME@SHA256"):
        PackageApproval.parse(False, [pin])
