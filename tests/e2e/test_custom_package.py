"""End to end: a custom PyTorch package (a CNN and a dataset.py reading PNG folders) is
tested and uploaded with ``upload_model``, trained across two real client processes that
approved it, refused by one that did not, and broken packages are refused at upload.

Data: scikit-learn's bundled digits (8x8 images), written as PNG files, one folder per
label; every fifth image is the shared test set, the rest split between the two silos.
Reference: the trained state_dict loaded into the package's own class in this process,
evaluated on the test PNGs, must agree with the federated accuracy and reach 90 %.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import fedsilo
from fedsilo.errors import ConfigError
from fedsilo.packages.custom.executor import dataset_tensors, evaluate_module
from fedsilo.packages.custom.loader import load_package
from fedsilo.runners.local import start_client, start_server

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_packages" / "digitscnn"
MODEL_CONFIG: dict[str, Any] = json.loads((EXAMPLE / "model_config.json").read_text())


def write_digits(root: Path) -> dict[str, Path]:
    """The digits as PNGs: ``test/``, ``silo0/``, ``silo1/``, each ``<label>/img_N.png``."""
    digits = load_digits()
    train_index = 0
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if i % 5 == 0:
            split = "test"
        else:
            split = f"silo{train_index % 2}"
            train_index += 1
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * 255 / 16).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:04d}.png")
    return {name: root / name for name in ("test", "silo0", "silo1")}


def broken_copy(tmp: Path, name: str, edit: dict[str, str | None]) -> Path:
    """The example package with files replaced (None: removed)."""
    folder = tmp / name
    shutil.copytree(EXAMPLE, folder)
    for file, text in edit.items():
        if text is None:
            (folder / file).unlink()
        else:
            (folder / file).write_text(text)
    return folder


@pytest.mark.slow
def test_a_custom_cnn_trains_on_approving_clients_only(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    data = write_digits(tmp_path / "digits")
    configs = tmp_path / "configs"
    configs.mkdir()
    model_config_path = configs / "model_config.json"
    model_config_path.write_text(json.dumps(MODEL_CONFIG))
    data_config_path = configs / "data_config.json"
    data_config_path.write_text("{}")
    private = {**MODEL_CONFIG, "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 1}}
    private_path = configs / "private.json"
    private_path.write_text(json.dumps(private))
    model_py = (EXAMPLE / "model.py").read_text()

    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        modeller = scoped_tokens(
            server.url,
            server.admin_token,
            ["custom_model", "create_session", "start_session", "read_user_session",
             "user_model_download"],
            "modeller",
        )  # fmt: skip
        silo_tokens = [
            scoped_tokens.client(server.url, server.admin_token, f"silo{i}") for i in range(3)
        ]
        client = fedsilo.connect(server.url, modeller, timeout=120)
        request.addfinalizer(client.close)

        def upload(package: Path, name: str, config: Path = model_config_path) -> Any:
            return client.upload_model(
                package_path=str(package),
                dataset_path=str(data["silo0"]),
                package_name=name,
                sample_model_config_path=str(config),
                sample_data_config_path=str(data_config_path),
                batch_size=32,
                task="classification",
                test_only=False,
                description="a CNN on 8x8 digits",
            )

        # Refused at upload, with the reason: a syntax error, a wrong class name, BatchNorm
        # under DP-SGD.
        syntax = broken_copy(tmp_path, "syntax", {"model.py": model_py + "\ndef broken(:\n"})
        with pytest.raises(
            ConfigError, match=r"failed its one-epoch test.*model.py line \d+: SyntaxError"
        ):
            upload(syntax, "syntaxerror")
        renamed = broken_copy(
            tmp_path, "renamed", {"model.py": model_py.replace("class DigitsCNN", "class DigitNet")}
        )
        with pytest.raises(
            ConfigError, match=r"class DigitNet, so the package must hold digitnet\.json"
        ):
            upload(renamed, "wrongclass")
        batchnorm = broken_copy(
            tmp_path,
            "batchnorm",
            {"model.py": model_py.replace("nn.GroupNorm(4, channels)", "nn.BatchNorm2d(channels)")},
        )
        with pytest.raises(ConfigError, match=r"features\.1 \(BatchNorm2d\).*GroupNorm"):
            upload(batchnorm, "batchnormdp", private_path)
        assert {p.name for p in client.packages()}.isdisjoint(
            {"syntaxerror", "wrongclass", "batchnormdp"}
        )

        # test_only tests and uploads nothing; then the real upload.
        tested = client.upload_model(
            str(EXAMPLE), str(data["silo0"]), "digitscnn", str(model_config_path),
            str(data_config_path), 32, "classification", True, "",
        )  # fmt: skip
        assert tested.package is None and tested.metrics["num_examples"] > 0
        assert "digitscnn" not in {p.name for p in client.packages()}
        uploaded = upload(EXAMPLE, "digitscnn").package
        assert uploaded is not None and len(uploaded.digest or "") == 64
        digest = uploaded.digest

        session = client.create_fl_session(
            name="digits cnn",
            description="",
            min_num_clients=2,
            num_rounds=3,
            package_name="digitscnn",
            model_config=MODEL_CONFIG,
            data_config={},
        ).start()

        # A client whose operator did not approve the package refuses before joining, while
        # two that did train it.
        unapproved = start_client(
            session.id, str(data["silo0"]), str(data["test"]), 32, "unapproved", server.url,
            silo_tokens[2], log_path=tmp_path / "unapproved.log",
        )  # fmt: skip
        approvals = [["--approve-custom-package"], ["--approve-package", f"digitscnn@{digest}"]]
        clients = [
            start_client(
                session.id,
                str(data[f"silo{i}"]),
                str(data["test"]),
                32,
                f"silo{i}",
                server.url,
                silo_tokens[i],
                log_path=tmp_path / f"client{i}.log",
                extra_args=approvals[i],
            )
            for i in range(2)
        ]
        try:
            assert unapproved.wait(timeout=120) != 0
            session.wait(timeout=300, progress=False)
            codes = [c.wait(timeout=60) for c in clients]
        finally:
            for c in [*clients, unapproved]:
                c.stop()
        refused = (tmp_path / "unapproved.log").read_text()
        assert f"--approve-package digitscnn@{digest}" in refused, refused[-2000:]
        logs = [(tmp_path / f"client{i}.log").read_text() for i in range(2)]
        assert codes == [0, 0], [log[-2000:] for log in logs]
        for log in logs:
            assert f"running uploaded package digitscnn sha256 {digest}" in log

        metrics = session.metrics().as_dict()
        federated = metrics["federated_metrics"][-1]["accuracy"]
        assert federated >= 0.90, metrics["federated_metrics"]
        assert any("'unapproved' refused" in str(line) for line in session.logs())

        # Reference: the saved weights in the package's own class, on the test PNGs here.
        package = load_package(EXAMPLE)
        module = package.build_model(MODEL_CONFIG["model"]["params"])
        arrays = dict(session.model().arrays)
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        x, y = dataset_tensors(package.build_dataset(str(data["test"]), {}), "classification", "t")
        local = evaluate_module(module, x, y, "classification", 256)["test_accuracy"]
        assert local >= 0.90
        assert local == pytest.approx(federated, abs=1e-9)
