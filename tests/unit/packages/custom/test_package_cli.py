"""``fedsilo package list`` against the real thread server: built-in and uploaded packages,
the uploaded one with its digest and uploader; a bad approval pin is one line, exit != 0."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

from fedsilo.cli.app import app
from fedsilo.packages.custom.archive import digest_of, pack_folder

EXAMPLE = Path(__file__).parents[4] / "examples" / "custom_packages" / "digitscnn"
runner = CliRunner()


def test_package_list_shows_the_digest(thread_server, scoped_tokens) -> None:
    url = thread_server.url
    uploader = scoped_tokens(url, thread_server.token, ["custom_model"], "modeller")
    archive = pack_folder(EXAMPLE)
    with httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {uploader}"}
    ) as h:
        made = h.post(
            "/packages",
            content=archive,
            params={"name": "listedcnn", "task": "classification", "description": "a CNN"},
            headers={"Content-Type": "application/octet-stream"},
        )
    assert made.status_code == 201
    args = ["package", "list", "--url", url, "--token", uploader]
    table = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    line = next(row for row in table.output.splitlines() if "listedcnn" in row)
    assert digest_of(archive) in line and "modeller" in line and "custom classification" in line
    assert "built-in" in next(row for row in table.output.splitlines() if "ffnet" in row)
    listed = json.loads(runner.invoke(app, [*args, "--format", "json"]).output)
    assert {p["name"]: p["digest"] for p in listed}["listedcnn"] == digest_of(archive)


def test_a_malformed_pin_stops_the_client_in_one_line() -> None:
    result = runner.invoke(
        app,
        [
            "client", "train", "--session", "0123456789", "--train-path", "x.csv",
            "--client-name", "silo0", "--url", "http://127.0.0.1:9", "--token", "t",
            "--approve-package", "cnn",
        ],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--approve-package takes NAME@SHA256" in result.output
    assert "Traceback" not in result.output
