"""POST /packages (custom package upload), its listing and GET /packages/{name}/archive,
through the real thread server: digest, uniqueness, size limit, scopes."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import httpx
import pytest

from fedsilo.packages.custom.archive import MAX_ARCHIVE_BYTES, pack_folder

EXAMPLE = Path(__file__).parents[4] / "examples" / "custom_packages" / "digitscnn"


def _http(url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _post(
    http: httpx.Client, data: bytes, name: str = "digitscnn", **params: str
) -> httpx.Response:
    return http.post(
        "/packages",
        content=data,
        params={"name": name, "task": "classification", **params},
        headers={"Content-Type": "application/octet-stream"},
    )


def test_upload_lists_the_digest_and_serves_the_same_bytes(thread_server, scoped_tokens) -> None:
    url = thread_server.url
    uploader = scoped_tokens(url, thread_server.token, ["custom_model"], "modeller")
    silo = scoped_tokens.client(url, thread_server.token, "silo0")
    archive = pack_folder(EXAMPLE)
    digest = hashlib.sha256(archive).hexdigest()
    with _http(url, uploader) as http:
        made = _post(http, archive, description="a CNN", sha256=digest)
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["name"], body["digest"], body["custom"]) == ("digitscnn", digest, True)
        assert body["uploaded_by"] == "modeller" and body["size"] == len(archive)
        listed = {p["name"]: p for p in http.get("/packages").json()}
        assert listed["digitscnn"]["digest"] == digest
        assert listed["digitscnn"]["created_at"] is not None
        assert listed["ffnet"]["digest"] is None  # built-in packages carry none
        again = _post(http, archive)
        assert again.status_code == 409 and "unique" in again.json()["detail"]
    with _http(url, silo) as http:
        got = http.get("/packages/digitscnn/archive")
        assert got.status_code == 200
        assert got.content == archive and got.headers["X-Fedsilo-Sha256"] == digest
        assert http.get("/packages/nosuch/archive").status_code == 404
        refused = _post(http, archive, name="other")
        assert refused.status_code == 403 and "custom_model" in refused.json()["detail"]
    # The schema of an uploaded package is the custom configs (the server imports no code).
    with _http(url, silo) as http:
        schema = http.get("/packages/digitscnn/schema").json()
        assert "ml_task" in schema["model_config"]["properties"]


def test_upload_refuses_bad_archives_names_and_sizes(thread_server, scoped_tokens) -> None:
    url = thread_server.url
    uploader = scoped_tokens(url, thread_server.token, ["custom_model"], "modeller")
    analyst = scoped_tokens.analyst(url, thread_server.token)
    archive = pack_folder(EXAMPLE)
    with _http(url, uploader) as http:
        too_big = _post(http, b"\0" * (MAX_ARCHIVE_BYTES + 1), name="big")
        assert too_big.status_code == 413 and str(MAX_ARCHIVE_BYTES) in too_big.json()["detail"]
        not_tar = _post(http, b"not a tar", name="junk")
        assert not_tar.status_code == 422 and "gzipped tar" in not_tar.json()["detail"]
        assert "hyphens" in _post(http, archive, name="My-Model").json()["detail"]
        wrong_digest = _post(http, archive, name="damaged", sha256="0" * 64)
        assert wrong_digest.status_code == 422 and "damaged" in wrong_digest.json()["detail"]
        assert _post(http, archive, name="ffnet").status_code == 409  # a built-in's name
        escaping = _tar({"../evil.py": b"x", "model.py": b""})
        assert "not a plain file" in _post(http, escaping, name="evil").json()["detail"]
        no_model = _tar({"other.py": b""})
        assert "no model.py" in _post(http, no_model, name="nomodel").json()["detail"]
        task = _post(http, archive, name="seg", task="segmentation")
        assert task.status_code == 422 and "classification, regression" in task.json()["detail"]
        names = {p["name"] for p in http.get("/packages").json()}
        assert not names & {"big", "junk", "damaged", "evil", "nomodel", "seg"}
    with _http(url, analyst) as http:
        refused = http.get("/packages/digitscnn/archive")
        assert refused.status_code == 403


def _tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.fixture(autouse=True)
def _example_exists() -> None:
    assert (EXAMPLE / "model.py").is_file()
