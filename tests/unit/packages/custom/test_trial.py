"""The one-epoch test before an upload (in process here; upload_model runs it in a child)
and the seed's restrictions: each refusal names what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import ConfigError
from fedsilo.packages.custom.archive import digest_of, pack_folder, unpack_archive
from fedsilo.packages.custom.trial import trial_run

MLP = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, inputs: int = 4, hidden: int = 8, outputs: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(inputs, hidden), NORM, nn.ReLU(), nn.Linear(hidden, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
"""
MODEL_CONFIG = {
    "ml_task": {"type": "classification"},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
}
PRIVATE = {**MODEL_CONFIG, "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 1}}
DATA_CONFIG = {"predictors": ["a", "b", "c", "d"], "target": "y"}


def _package(tmp_path: Path, norm: str = "nn.Identity()", json_name: str = "tinynet") -> Path:
    folder = tmp_path / "pkg"
    folder.mkdir(exist_ok=True)
    (folder / "model.py").write_text(MLP.replace("NORM", norm))
    (folder / f"{json_name}.json").write_text('{"hidden": 8}')
    return folder


def _table(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    frame = pd.DataFrame(x, columns=list("abcd")).assign(y=(x[:, 0] + x[:, 1] > 0).astype(int))
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _run(tmp_path: Path, package: Path, model_config: dict = MODEL_CONFIG) -> dict:
    return trial_run(
        str(package), _table(tmp_path), model_config, DATA_CONFIG, 16, "classification"
    )


def test_a_table_package_trains_one_epoch(tmp_path: Path) -> None:
    result = _run(tmp_path, _package(tmp_path))
    assert result["num_examples"] == 200 and result["test_num_examples"] == 200
    assert result["parameters"] == 4 * 8 + 8 + 8 * 2 + 2
    assert 0.0 <= result["test_accuracy"] <= 1.0 and np.isfinite(result["train_loss"])


def test_a_syntax_error_is_refused_with_its_line(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "model.py").write_text((package / "model.py").read_text() + "\ndef f(:\n")
    with pytest.raises(ConfigError, match=r"model.py line \d+: SyntaxError"):
        _run(tmp_path, package)


def test_a_json_not_named_after_the_class_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"class TinyNet, so the package must hold tinynet.json"):
        _run(tmp_path, _package(tmp_path, json_name="templatemodel"))


def test_batchnorm_under_dp_is_refused_naming_the_module_and_groupnorm(tmp_path: Path) -> None:
    package = _package(tmp_path, norm="nn.BatchNorm1d(hidden)")
    assert _run(tmp_path, package)["num_examples"] == 200  # without DP it trains
    with pytest.raises(ConfigError, match=r"body\.1 \(BatchNorm1d\).*torch\.nn\.GroupNorm"):
        _run(tmp_path, package, PRIVATE)


def test_an_lstm_under_dp_is_refused_naming_dplstm(tmp_path: Path) -> None:
    package = _package(tmp_path)
    text = (
        (package / "model.py")
        .read_text()
        .replace(
            "        self.body =",
            "        self.memory = nn.LSTM(inputs, hidden)\n        self.body =",
        )
    )
    (package / "model.py").write_text(text)
    with pytest.raises(ConfigError, match=r"memory \(LSTM\).*opacus\.layers\.DPLSTM"):
        _run(tmp_path, package, PRIVATE)


def test_a_private_epoch_reports_its_budget(tmp_path: Path) -> None:
    result = _run(tmp_path, _package(tmp_path), PRIVATE)
    assert 0 < result["epsilon_spent"] <= 4 and "train_loss" not in result


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("poisson", "GLM family: train it with package_name 'glm'"),
        ("segmentation", "custom losses"),
    ],
)
def test_unsupported_tasks_are_refused(tmp_path: Path, task: str, expected: str) -> None:
    config = {**MODEL_CONFIG, "ml_task": {"type": task}}
    with pytest.raises(ConfigError, match=expected):
        trial_run(str(_package(tmp_path)), _table(tmp_path), config, DATA_CONFIG, 16, task)
    with pytest.raises(ConfigError, match=expected):
        _run(tmp_path, _package(tmp_path), config)


def test_the_task_argument_must_agree_with_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task is 'regression' but the model config's ml_task"):
        trial_run(
            str(_package(tmp_path)), _table(tmp_path), MODEL_CONFIG, DATA_CONFIG, 16, "regression"
        )


def test_the_archive_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"junk")
    first = pack_folder(package)
    (package / "model.py").touch()  # a new mtime changes nothing
    assert digest_of(pack_folder(package)) == digest_of(first)
    out = unpack_archive(first, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["model.py", "tinynet.json"]
