"""Model: frame plumbing (decode, save/load round trip) and delegation to the package export."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from fedsilo.errors import ConfigError, FedsiloError, WireError
from fedsilo.federation import REGISTRY, DataConfigBase, ModelPackage
from fedsilo.sdk.model import Model
from fedsilo.wire import Arrays, ModelMeta, SessionKind, encode_frame

# ---------------------------------------------------------------- a toy package


class ToyModelConfig(BaseModel):
    scale: float


class ToyDataConfig(DataConfigBase):
    predictors: list[str]
    target: str

    def required_columns(self) -> list[str]:
        return [*self.predictors, self.target]


class ToyExport:
    """A linear model ``y = scale * X @ w``; as_pytorch returns a torch Linear."""

    def __init__(self, mc: ToyModelConfig, dc: ToyDataConfig, arrays: Arrays) -> None:
        self.mc, self.dc, self.arrays = mc, dc, arrays

    def as_pytorch(self) -> Any:
        import torch

        layer = torch.nn.Linear(len(self.dc.predictors), 1, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(self.arrays["w"][None, :] * self.mc.scale))
        return layer.eval()

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        return data[self.dc.predictors].to_numpy() @ self.arrays["w"] * self.mc.scale


class ToySklearnExport(ToyExport):
    def as_sklearn(self) -> str:
        return "an estimator"


def _unused(*args: object) -> Any:
    raise AssertionError("not used by the SDK")


def _export(mc: ToyModelConfig, dc: ToyDataConfig, arrays: Arrays, meta: dict[str, Any]) -> Any:
    return ToyExport(mc, dc, arrays)


def _export_sklearn(
    mc: ToyModelConfig, dc: ToyDataConfig, arrays: Arrays, meta: dict[str, Any]
) -> Any:
    return ToySklearnExport(mc, dc, arrays)


TOY_MODULE = "fedsilo_test_toy_package"


@pytest.fixture
def toy_package(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    # The contract names the executor and export by "module:attribute", imported on first
    # use; the toy module sits in sys.modules so importlib finds those attributes on it.
    module = types.ModuleType(TOY_MODULE)
    module.executor = _unused  # type: ignore[attr-defined]
    module.export = _export  # type: ignore[attr-defined]
    module.export_sklearn = _export_sklearn  # type: ignore[attr-defined]
    module.PACKAGE = ModelPackage(  # type: ignore[attr-defined]
        name="toy",
        description="a linear toy",
        kind=SessionKind.hfl,
        model_config_type=ToyModelConfig,
        data_config_type=ToyDataConfig,
        workflow=_unused,
        executor_ref=f"{TOY_MODULE}:executor",
        export_ref=f"{TOY_MODULE}:export",
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(REGISTRY, "toy", module.__name__)
    return module


def _meta(**overrides: Any) -> ModelMeta:
    fields: dict[str, Any] = {
        "session_id": "0123456789",
        "package_name": "toy",
        "round": 4,
        "model_config": {"scale": 2.0},
        "data_config": {"predictors": ["a", "b"], "target": "y"},
        "meta": {"best_metric": 0.5},
    }
    fields.update(overrides)
    return ModelMeta(**fields)


WEIGHTS = {"w": np.array([1.0, -0.5])}


# ---------------------------------------------------------------- frame plumbing


def test_from_frame_reads_arrays_and_meta() -> None:
    frame = encode_frame(WEIGHTS, _meta())
    model = Model.from_frame(frame)

    assert model.session_id == "0123456789"
    assert model.package_name == "toy"
    assert model.round == 4
    assert model.meta.model_config_ == {"scale": 2.0}
    assert model.meta.meta == {"best_metric": 0.5}
    np.testing.assert_array_equal(model.arrays["w"], WEIGHTS["w"])
    assert model.frame == frame
    assert "round=4" in repr(model)
    assert "weights=2" in repr(model)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = Model.from_frame(encode_frame(WEIGHTS, _meta()))
    written = model.save(tmp_path / "nested" / "model.safetensors")

    assert written.read_bytes() == model.frame
    loaded = Model.load(written)
    assert loaded.meta == model.meta
    np.testing.assert_array_equal(loaded.arrays["w"], model.arrays["w"])


def test_model_built_from_arrays_encodes_its_frame(tmp_path: Path) -> None:
    model = Model({"w": WEIGHTS["w"]}, _meta())
    loaded = Model.load(model.save(tmp_path / "m.safetensors"))
    assert loaded.meta == model.meta


def test_from_frame_rejects_garbage() -> None:
    with pytest.raises(WireError, match="expected at least the 8-byte header"):
        Model.from_frame(b"abc")


def test_from_frame_rejects_a_frame_without_model_meta() -> None:
    with pytest.raises(WireError, match=r"model frame header is malformed: .*session_id"):
        Model.from_frame(encode_frame(WEIGHTS, {"round": 1}))


def test_load_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.bin"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(WireError, match=r"not-a-model\.bin is not a fedsilo model file"):
        Model.load(bad)


# ---------------------------------------------------------------- export delegation


@pytest.mark.usefixtures("toy_package")
def test_predict_and_as_pytorch_delegate_to_the_package() -> None:
    import torch

    model = Model.from_frame(encode_frame(WEIGHTS, _meta()))
    data = pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 0.0], "other": ["x", "y"]})

    np.testing.assert_allclose(model.predict(data), [0.0, 4.0])
    module = model.as_pytorch()
    assert isinstance(module, torch.nn.Module)
    with torch.no_grad():
        out = module(torch.tensor([[1.0, 2.0], [2.0, 0.0]]))
    np.testing.assert_allclose(out.numpy().ravel(), [0.0, 4.0])
    assert model.exported is model.exported  # built once


@pytest.mark.usefixtures("toy_package")
def test_as_sklearn_without_export_is_a_clear_error() -> None:
    model = Model.from_frame(encode_frame(WEIGHTS, _meta()))
    with pytest.raises(FedsiloError, match="'toy' package has no scikit-learn export"):
        model.as_sklearn()


def test_as_sklearn_delegates_when_offered(toy_package: types.ModuleType) -> None:
    toy_package.PACKAGE = dataclasses.replace(
        toy_package.PACKAGE, export_ref=f"{TOY_MODULE}:export_sklearn"
    )
    model = Model.from_frame(encode_frame(WEIGHTS, _meta()))
    assert model.as_sklearn() == "an estimator"


def test_export_ref_that_cannot_be_imported_names_the_ref(toy_package: types.ModuleType) -> None:
    toy_package.PACKAGE = dataclasses.replace(
        toy_package.PACKAGE, export_ref=f"{TOY_MODULE}:missing"
    )
    model = Model.from_frame(encode_frame(WEIGHTS, _meta()))
    with pytest.raises(ConfigError, match=r"export_ref 'fedsilo_test_toy_package:missing'"):
        model.predict(pd.DataFrame({"a": [1.0], "b": [1.0]}))


@pytest.mark.usefixtures("toy_package")
def test_export_with_a_bad_config_names_the_field() -> None:
    model = Model.from_frame(encode_frame(WEIGHTS, _meta(model_config={"scale": "big"})))
    with pytest.raises(ConfigError, match=r"model_config is invalid: scale"):
        model.predict(pd.DataFrame({"a": [1.0], "b": [1.0]}))


def test_unknown_package_is_a_clear_error() -> None:
    model = Model.from_frame(encode_frame(WEIGHTS, _meta(package_name="nope")))
    with pytest.raises(ConfigError, match="Unknown package_name 'nope'"):
        model.as_pytorch()


# ---------------------------------------------------------------- the real ffnet package

FFNET_MODEL_CONFIG: dict[str, Any] = {
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 3, "hidden_layer_sizes": [4], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
    "seed": 5,
}
FFNET_DATA_CONFIG: dict[str, Any] = {"predictors": ["a", "b", "c"], "target": "y"}


def test_ffnet_model_through_the_sdk(tmp_path: Path) -> None:
    import torch

    from fedsilo.packages.ffnet import PACKAGE, FFNetModel, build_module
    from fedsilo.packages.ffnet.model import module_arrays

    module = build_module(PACKAGE.parse_model_config(FFNET_MODEL_CONFIG))
    arrays = module_arrays(module)
    meta = ModelMeta(
        session_id="0123456789",
        package_name="ffnet",
        round=3,
        model_config=FFNET_MODEL_CONFIG,
        data_config=FFNET_DATA_CONFIG,
        meta={"selected_by": "loss"},
    )
    model = Model.load(Model.from_frame(encode_frame(arrays, meta)).save(tmp_path / "m.st"))

    assert isinstance(model.exported, FFNetModel)
    data = pd.DataFrame({"c": [0.5, -1.0, 2.0], "a": [1.0, 0.0, -2.0], "b": [0.0, 3.0, 1.0]})
    features = torch.tensor(data[["a", "b", "c"]].to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        expected = module(features).argmax(dim=1).numpy()
        again = model.as_pytorch()(features).argmax(dim=1).numpy()
    np.testing.assert_array_equal(model.predict(data), expected)
    np.testing.assert_array_equal(again, expected)
    with pytest.raises(ConfigError, match="no scikit-learn form"):
        model.as_sklearn()
